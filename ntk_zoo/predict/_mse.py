"""``gradient_descent_mse``: linearised training on the MSE, in closed form.

``gradient_descent_mse`` predicts the outputs of a network trained by full-batch gradient descent
on the mean squared error, under the NTK (linearised) approximation: the function-space
dynamics are linear, so the eigendecomposition of the train kernel solves them at every time.
Follows the conventions of neural-tangents' ``nt.predict.gradient_descent_mse`` (loss
normalisation, time in units of steps, relative ``diag_reg``); NumPy only, float64 throughout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ntk_zoo.spectrum import flatten_kernel

__all__ = ["gradient_descent_mse"]

PredictFn = Callable[..., Any]


def _flat_kernel(k: np.ndarray, name: str) -> np.ndarray:
    """``(n1, n2)`` stays; ``(n1, n2, o1, o2)`` becomes ``(n1·o1, n2·o2)`` (example-major)."""
    if k.ndim not in (2, 4):
        raise ValueError(
            f"{name} has shape {k.shape}: expected (n1, n2) (trace_axes=(-1,), shared by every "
            "output) or (n1, n2, o, o) (trace_axes=()), with diagonal_axes=()."
        )
    return flatten_kernel(k)


def gradient_descent_mse(
    k_train_train: Any,
    y_train: Any,
    *,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    discrete: bool = False,
) -> PredictFn:
    """Predictions of a network trained on ``(x_train, y_train)`` by full-batch gradient descent
    on the MSE loss, under its NTK.

    The loss is ``L = ‖f(X) − Y‖² / (2·N)`` with ``N = y_train.size`` (``n·o``), as in
    neural-tangents. For the linearised network gradient descent gives
    ``f(X)_{t+1} − Y = (I − η Θ / N) (f(X)_t − Y)`` and, off the training set,
    ``f(x)_{t+1} = f(x)_t − η Θ(x, X) (f(X)_t − Y) / N``. In continuous time (gradient flow,
    the default) the factor is ``exp(−η Θ t / N)``; ``t`` counts steps of size ``η`` in both
    cases (absolute time ``η·t``). With ``Θ = V diag(λ) Vᵀ``:

    * train: ``f_t = Y + V e(λ, t) Vᵀ (f_0 − Y)``,
    * test: ``f_t(x) = f_0(x) + Θ(x, X) V diag((1 − e(λ, t)) / λ) Vᵀ (Y − f_0)``,

    with ``e = exp(−ηλt/N)``, or ``(1 − ηλ/N)^t`` when ``discrete``. At ``t = ∞`` this is kernel
    regression, ``f_0(x) + Θ(x, X) Θ⁻¹ (Y − f_0)``. Directions with ``λ <= 0`` (rounding in a
    rank-deficient kernel) are not trained, as gradient descent leaves them.

    A ``(n, n)`` kernel (``trace_axes=(-1,)``) is taken as ``Θ ⊗ I``: shared by every output
    column of ``y_train``, exact for one output or last-layer kernels, an approximation
    otherwise; a ``(n, n, o, o)`` kernel (``trace_axes=()``) gives the exact linearised dynamics.

    Args:
      k_train_train: ``Θ(X, X)``, ``(n, n)`` or ``(n, n, o, o)``, from :func:`ntk_zoo.ntk_fn`
        with ``x2=None``.
      y_train: targets, ``(n,)`` or ``(n, o, ...)`` for an ``(n, n)`` kernel, ``(n, o)`` for an
        ``(n, n, o, o)`` one.
      learning_rate: the step size ``η``.
      diag_reg: added to the eigenvalues (``Θ + diag_reg·I``): relative to the mean diagonal
        ``tr Θ / dim`` unless ``diag_reg_absolute_scale``.
      diag_reg_absolute_scale: take ``diag_reg`` in absolute units.
      discrete: use the exact discrete-time factor ``(1 − ηλ/N)^t`` (``t`` whole steps) instead
        of gradient flow.

    Returns:
      ``predict(t, fx_train_0, fx_test_0=None, k_test_train=None)``: ``t`` a number or array
      of times (steps; ``numpy.inf`` or ``None`` for the limit), ``fx_train_0`` the outputs on
      ``X`` at initialisation (a scalar broadcasts), ``fx_test_0`` those on test inputs ``x``
      and ``k_test_train = Θ(x, X)``. It returns ``fx_train_t``, or ``(fx_train_t, fx_test_t)``
      when ``fx_test_0`` is given, float64 arrays with ``t``'s shape in front.

    Example:
      >>> import numpy as np
      >>> from ntk_zoo import predict
      >>> k = np.array([[2.0, 1.0], [1.0, 2.0]])
      >>> y = np.array([[1.0], [-1.0]])
      >>> fn = predict.gradient_descent_mse(k, y)
      >>> fn(np.inf, 0.0).round(6).tolist()
      [[1.0], [-1.0]]
      >>> k_test = np.array([[1.0, 0.0]])
      >>> train, test = fn(np.inf, 0.0, np.zeros((1, 1)), k_test)
      >>> test.round(6).tolist()  # Θ(x, X) Θ⁻¹ y
      [[1.0]]

    References: A. Jacot, F. Gabriel, C. Hongler, "Neural Tangent Kernel: Convergence and
    Generalization in Neural Networks", NeurIPS 2018; J. Lee et al., "Wide Neural Networks of
    Any Depth Evolve as Linear Models Under Gradient Descent", NeurIPS 2019.
    """
    k = np.asarray(k_train_train, np.float64)
    y = np.asarray(y_train, np.float64)
    full = k.ndim == 4
    k_flat = _flat_kernel(k, "k_train_train")
    if k_flat.shape[0] != k_flat.shape[1] or (full and k.shape[2] != k.shape[3]):
        raise ValueError(
            f"k_train_train must be the square Θ(X, X), got shape {k.shape}: compute it with "
            "x2=None."
        )
    n = k.shape[0]
    if y.ndim == 0 or y.shape[0] != n:
        raise ValueError(
            f"y_train has shape {y.shape} but k_train_train {k.shape} is over {n} examples: "
            "the targets need those examples along axis 0."
        )
    if full and y.shape != (n, k.shape[2]):
        raise ValueError(
            f"An (n, n, o, o) kernel of shape {k.shape} needs y_train of shape "
            f"{(n, k.shape[2])}, got {y.shape}."
        )
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate!r}.")
    if diag_reg < 0:
        raise ValueError(f"diag_reg must be >= 0, got {diag_reg!r}.")
    normalisation = y.size
    k_flat = (k_flat + k_flat.T) / 2
    reg = diag_reg if diag_reg_absolute_scale else diag_reg * np.trace(k_flat) / k_flat.shape[0]
    eigenvalues, vectors = np.linalg.eigh(k_flat)
    eigenvalues = eigenvalues + reg
    trained = eigenvalues > 0
    # Residual in the eigenbasis: (dim, columns); columns share the kernel if it is (n, n).
    as_columns = lambda a: a.reshape(n * (k.shape[2] if full else 1), -1)

    def factors(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``e(λ, t)`` and ``(1 − e(λ, t)) / λ``, shapes ``t.shape + (dim,)``."""
        z = learning_rate * np.where(trained, eigenvalues, 0.0) / normalisation
        t = t[..., None]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            if discrete:
                base = 1 - z
                log_base = np.log1p(-np.where(base > 0, z, 0.0))
                exponent = np.where(t == 0, 0.0, t * log_base)
                one_minus_e = np.where(base > 0, -np.expm1(exponent), 1 - base**t)
            else:
                one_minus_e = -np.expm1(np.where(t == 0, 0.0, -z * t))
        one_minus_e = np.where(trained, one_minus_e, 0.0)
        safe = np.where(trained, eigenvalues, 1.0)
        return 1 - one_minus_e, one_minus_e / safe

    def predict(
        t: Any,
        fx_train_0: Any,
        fx_test_0: Any = None,
        k_test_train: Any = None,
    ) -> Any:
        t = np.inf if t is None else t
        t = np.asarray(t, np.float64)
        if np.any(t < 0) or np.any(np.isnan(t)):
            raise ValueError(f"Times must be >= 0 (or inf), got {t}.")
        if discrete and np.any(np.isfinite(t) & (t != np.round(t))):
            raise ValueError(f"discrete=True counts whole steps; got non-integer times {t}.")
        if (fx_test_0 is None) != (k_test_train is None):
            raise ValueError(
                "Test predictions need both fx_test_0 (outputs on the test inputs at "
                "initialisation) and k_test_train (Θ(x_test, x_train)); got only one."
            )
        f0 = np.broadcast_to(np.asarray(fx_train_0, np.float64), y.shape)
        e, phi = factors(t)
        residual = vectors.T @ as_columns(f0 - y)  # (dim, columns)
        train = y + np.einsum("dk,...k,kc->...dc", vectors, e, residual).reshape(t.shape + y.shape)
        if fx_test_0 is None:
            return train
        kt = np.asarray(k_test_train, np.float64)
        kt_flat = _flat_kernel(kt, "k_test_train")
        if kt.ndim != k.ndim or kt_flat.shape[1] != k_flat.shape[0] or kt.shape[1] != n:
            raise ValueError(
                f"k_test_train has shape {kt.shape}; with k_train_train of shape {k.shape} it "
                f"must be {('m', n, *k.shape[2:])} (Θ(x_test, x_train), same trace_axes)."
            )
        m = kt.shape[0]
        test_shape = (m, *y.shape[1:])
        ftest0 = np.broadcast_to(np.asarray(fx_test_0, np.float64), test_shape)
        moved = np.einsum("md,...d,dc->...mc", kt_flat @ vectors, phi, residual)
        test = ftest0 - moved.reshape(t.shape + test_shape)
        return train, test

    return predict
