"""``gp_inference``: the NNGP, NTK and NTKGP posteriors, by cached Cholesky solves."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import scipy.linalg

from ntk_zoo.predict import _layout

__all__ = ["Gaussian", "gp_inference"]


class Gaussian(NamedTuple):
    """A Gaussian over outputs: ``mean`` shaped like the outputs, ``covariance`` like the kernel.

    The covariance is interleaved as kernels are (``(m, m)``, or ``(m, m, o, o)`` with
    ``trace_axes=()``); over traced axes it is the same for every column (``Σ ⊗ I``).
    """

    mean: Any
    covariance: Any


class _Solver:
    """``(K + diag_reg·I)⁻¹ B`` for the ``(D, D)`` matrix of a kernel, Cholesky cached."""

    def __init__(self, k: np.ndarray, diag_reg: float, absolute: bool, name: str):
        matrix = _layout.as_matrix(k)
        matrix = _layout.regularise((matrix + matrix.T) / 2, diag_reg, absolute)
        try:
            self.factor = scipy.linalg.cho_factor(matrix, lower=True)
        except np.linalg.LinAlgError as e:
            raise np.linalg.LinAlgError(
                f"The {name} train-train kernel is not positive definite (Cholesky failed): add "
                "a diagonal regulariser, e.g. diag_reg=1e-6 (relative to its mean diagonal)."
            ) from e

    def __call__(self, b: np.ndarray) -> np.ndarray:
        return scipy.linalg.cho_solve(self.factor, b)


def gp_inference(
    k_train_train: Any,
    y_train: Any,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    trace_axes: int | Sequence[int] = (-1,),
) -> Callable[..., Any]:
    """The posterior of Gaussian-process inference with the NNGP, the NTK or the NTKGP.

    With ``K`` the NNGP kernel, ``Θ`` the NTK and ``A⁻¹ = (· + diag_reg·I)⁻¹`` on the train set
    ``X`` (targets ``Y``), the kinds of neural-tangents' ``nt.predict.gp_inference``:

    * ``"nngp"``, the Bayesian posterior of the NNGP: mean ``K(x, X) A_K⁻¹ Y``, covariance
      ``K(x, x) − K(x, X) A_K⁻¹ K(X, x)``;
    * ``"ntk"``, an infinite ensemble trained by gradient flow to convergence (Lee et al. 2019):
      mean ``Θ(x, X) A_Θ⁻¹ Y``, covariance ``K(x, x) + Θ(x, X) A_Θ⁻¹ K(X, X) A_Θ⁻¹ Θ(X, x)
      − (Θ(x, X) A_Θ⁻¹ K(X, x) + transpose)`` (needs both kernels);
    * ``"ntkgp"``, the GP with the NTK as covariance (He et al. 2020): the NNGP formulas with
      ``Θ`` for ``K``.

    ``diag_reg`` is relative to the mean diagonal ``tr K / D`` (``D`` the kernel matrix's side)
    unless ``diag_reg_absolute_scale``, as in neural-tangents. Kernels are over outputs with
    ``trace_axes`` removed (read as ``K ⊗ I`` over those axes), interleaved as
    :func:`ntk_zoo.ntk_fn` returns them; ``diagonal_axes`` must be empty. The Cholesky factor of
    each train kernel is computed on first use and kept. NumPy/SciPy in float64.

    Args:
      k_train_train: the train-train kernel(s): an array (used for every kind), a mapping or a
        named tuple with ``nngp`` and/or ``ntk`` (e.g. from :func:`ntk_zoo.kernel_fn`).
      y_train: targets, the shape of the outputs on ``X``.
      diag_reg: the regulariser added to the train kernels' diagonal.
      diag_reg_absolute_scale: take ``diag_reg`` in absolute units.
      trace_axes: the output axes absent from the kernels.

    Returns:
      ``predict(get=None, k_test_train=None, k_test_test=None)``. ``get`` is a kind, a tuple of
      kinds or ``None`` (``("nngp", "ntk")``); the test kernels come as ``k_train_train`` does.
      Each kind gives the posterior mean on the test set or, when ``k_test_test`` is given, a
      :class:`Gaussian` ``(mean, covariance)`` (``covariance`` shaped like ``k_test_test``).
      Without ``k_test_train`` it describes the train set: ``Y`` with zero covariance (pass
      ``k_test_test=True``). A string ``get`` returns one value, a tuple a named tuple
      ``Gaussians`` with one field per kind.

    Example:
      >>> import numpy as np
      >>> from ntk_zoo import predict
      >>> k = {"nngp": np.array([[2.0, 1.0], [1.0, 2.0]]), "ntk": np.eye(2)}
      >>> y = np.array([[1.0], [-1.0]])
      >>> fn = predict.gp_inference(k, y)
      >>> k_test = {"nngp": np.array([[1.0, 0.0]]), "ntk": np.array([[2.0, 0.0]])}
      >>> fn("nngp", k_test).round(6).tolist()  # K(x, X) K⁻¹ y
      [[1.0]]
      >>> g = fn("nngp", k_test, {"nngp": np.array([[1.0]])})
      >>> g.covariance.round(6).tolist()  # 1 − K(x, X) K⁻¹ K(X, x)
      [[0.333333]]

    References: J. Lee et al., "Deep Neural Networks as Gaussian Processes", ICLR 2018;
    J. Lee et al., "Wide Neural Networks of Any Depth Evolve as Linear Models Under Gradient
    Descent", NeurIPS 2019; B. He, B. Lakshminarayanan, Y. W. Teh, "Bayesian Deep Ensembles via
    the Neural Tangent Kernel", NeurIPS 2020.
    """
    y = np.asarray(y_train, np.float64)
    layout = _layout.target_layout(y, trace_axes)
    y_matrix = layout.to_matrix(y)
    solvers: dict[str, _Solver] = {}
    for kind in ("nngp", "ntk"):  # shapes checked now, factors computed on first use
        if hasattr(k_train_train, "shape") or kind in _layout.kinds_in(k_train_train):
            _layout.check_train_kernel(
                _layout.kernel_of(k_train_train, kind, "k_train_train"), layout
            )

    def train_kernel(kind: str) -> np.ndarray:
        k = _layout.kernel_of(k_train_train, kind, "k_train_train")
        _layout.check_train_kernel(k, layout)
        return k

    def solve(kind: str, b: np.ndarray) -> np.ndarray:
        if kind not in solvers:
            solvers[kind] = _Solver(train_kernel(kind), diag_reg, diag_reg_absolute_scale, kind)
        return solvers[kind](b)

    def predict(get: Any = None, k_test_train: Any = None, k_test_test: Any = None) -> Any:
        single, kinds = _layout.canonical_get(get, _layout.KINDS)
        out = {}
        for g in kinds:
            k = "nngp" if g == "nngp" else "ntk"
            if k_test_train is None:  # the train set: interpolated exactly
                mean = y.copy()
                if k_test_test is None:
                    out[g] = mean
                else:
                    out[g] = Gaussian(mean, np.zeros_like(train_kernel(k)))
                continue
            k_td = _layout.kernel_of(k_test_train, k, "k_test_train")
            _layout.check_test_kernel(k_td, layout)
            free_shape = k_td.shape[::2]
            td = _layout.as_matrix(k_td)  # (M, D)
            mean = layout.from_matrix(td @ solve(k, y_matrix), free_shape)
            if k_test_test is None:
                out[g] = mean
                continue
            prior = "ntk" if g == "ntkgp" else "nngp"  # the kernel of the network at init
            k_tt = _layout.kernel_of(k_test_test, prior, "k_test_test")
            if k_tt.shape != tuple(s for s in free_shape for _ in (0, 1)):
                raise ValueError(
                    f"k_test_test has shape {k_tt.shape}; for test kernels {k_td.shape} it must "
                    f"be {tuple(s for s in free_shape for _ in (0, 1))}."
                )
            tt = _layout.as_matrix(k_tt)
            if g in ("nngp", "ntkgp"):
                cov = tt - td @ solve(k, td.T)
            else:
                if any(hasattr(a, "shape") for a in (k_train_train, k_test_train)):
                    raise ValueError(
                        "The 'ntk' posterior covariance needs both the NNGP and the NTK, on the "
                        "train set and between test and train: pass k_train_train and "
                        "k_test_train as mappings or named tuples with 'nngp' and 'ntk'."
                    )
                nngp_td = _layout.as_matrix(_layout.kernel_of(k_test_train, "nngp", "k_test_train"))
                nngp_dd = _layout.as_matrix(train_kernel("nngp"))
                a = solve("ntk", td.T)  # Θ⁻¹ Θ(X, x): (D, M)
                cross = td @ solve("ntk", nngp_td.T)  # Θ(x, X) Θ⁻¹ K(X, x)
                cov = tt + a.T @ nngp_dd @ a - cross - cross.T
            out[g] = Gaussian(mean, _layout.from_matrix_pairs(cov, free_shape))
        return _layout.package("Gaussians", single, kinds, out)

    return predict
