"""``gradient_descent_mse_ensemble`` and ``max_learning_rate``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ntk_zoo.predict import _layout
from ntk_zoo.predict._gp import Gaussian, gp_inference

__all__ = ["gradient_descent_mse_ensemble", "max_learning_rate"]


def max_learning_rate(
    ntk_train_train: Any,
    y_train_size: int | None = None,
    momentum: float = 0.0,
    eps: float = 1e-12,
) -> float:
    """The largest learning rate for which gradient descent on the MSE converges under the NTK.

    On ``L = ‖f − Y‖² / (2·N)`` (``N = y_train_size``), gradient descent multiplies the error
    along an eigenvector of ``Θ`` (eigenvalue ``λ``) by ``1 − η λ / N`` per step: it converges
    iff ``η < 2·N / λ_max``. With heavy-ball momentum ``m`` the per-step map has spectral radius
    below one iff ``η λ / N < 2·(1 + m)``, hence ``η_max = 2·(1 + m)·N / λ_max`` — the formula of
    neural-tangents' ``nt.predict.max_learning_rate`` (``eps`` guards ``λ_max = 0``).

    Args:
      ntk_train_train: ``Θ(X, X)``, ``(n, n)`` or interleaved ``(n, n, o, o)``.
      y_train_size: ``N``, the number of outputs on the train set (``y_train.size``); ``None``
        takes the side of the kernel matrix, right for ``trace_axes=()`` kernels. Pass
        ``y_train.size`` for a ``(n, n)`` kernel of ``o`` outputs.
      momentum: the heavy-ball momentum ``m``.
      eps: added to ``λ_max``.

    Returns:
      ``η_max``, a float.

    Example:
      >>> import numpy as np
      >>> from ntk_zoo import predict
      >>> predict.max_learning_rate(np.diag([4.0, 1.0]), eps=0.0)  # 2·2/4
      1.0
    """
    k = _layout.as_matrix(np.asarray(ntk_train_train, np.float64))
    if k.shape[0] != k.shape[1]:
        raise ValueError(f"ntk_train_train must be square Θ(X, X), got shape {k.shape}.")
    factor = k.shape[0] if y_train_size is None else y_train_size
    lambda_max = float(np.linalg.eigvalsh((k + k.T) / 2)[-1])
    return 2 * (1 + momentum) * factor / (lambda_max + eps)


def _kernels(result: Any, kernel_fn: Any) -> dict[str, Any]:
    """A kernel function's result as ``{kind: array}``."""
    if hasattr(result, "shape") and hasattr(result, "dtype"):
        kind = getattr(kernel_fn, "get", None)
        return {kind if isinstance(kind, str) else "ntk": result}
    if hasattr(result, "_asdict"):
        result = result._asdict()
    return {k: v for k, v in dict(result).items() if v is not None}


def gradient_descent_mse_ensemble(
    kernel_fn: Callable[..., Any],
    x_train: Any,
    y_train: Any,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    trace_axes: int | Sequence[int] = (-1,),
    **kernel_fn_kwargs: Any,
) -> Callable[..., Any]:
    """Mean and covariance of an ensemble of networks trained on the MSE, at times ``t``.

    A network at initialisation is a draw from a Gaussian process with the NNGP kernel ``K``;
    trained by gradient flow on ``‖f − Y‖² / (2N)`` (``N = y_train.size``) under its NTK ``Θ``,
    it stays Gaussian (Lee et al. 2019). With ``A = Θ + diag_reg·I = V diag(λ) Vᵀ``,
    ``e(τ) = exp(−λ τ / N)`` and ``τ = η t``:

    * mean: ``Θ(x, X) V diag((1 − e)/λ) Vᵀ Y`` (on the train set ``V diag(1 − e) Vᵀ Y``);
    * covariance: ``K(x, x) + Θ(x, X) P K(X, X) P Θ(X, x) − (Θ(x, X) P K(X, x) + transpose)``
      with ``P = V diag((1 − e)/λ) Vᵀ`` (on the train set ``E K E`` with ``E = V diag(e) Vᵀ``);

    and ``get="nngp"`` is the same with ``K`` for ``Θ`` (the NNGP-only training of the readout),
    following neural-tangents' ``nt.predict.gradient_descent_mse_ensemble`` formula for formula.
    ``t = None`` is the limit ``t → ∞`` by Cholesky (:func:`gp_inference`); ``diag_reg`` is
    relative to the mean diagonal unless ``diag_reg_absolute_scale``. The train-train kernel is
    computed once and kept, with its eigendecomposition.

    With an empirical kernel function (``ntk_zoo.kernel_fn``, ``ntk_zoo.ntk_fn``,
    ``ntk_zoo.monte_carlo_kernel_fn``) this is the finite-width (or sampled) counterpart of the
    infinite ensemble: the prediction of the linearised network's ensemble whose initial outputs
    have covariance ``K``.

    Args:
      kernel_fn: called as ``kernel_fn(x1, x2, **kernel_fn_kwargs)``; it returns a mapping or
        named tuple with ``nngp`` and/or ``ntk`` (e.g. ``ntk_zoo.kernel_fn(f, get=("nngp",
        "ntk"))``), or an array: the NTK (the NNGP for ``ntk_zoo.nngp_fn``).
      x_train: train inputs.
      y_train: train targets.
      learning_rate: the step size ``η``.
      diag_reg: the regulariser added to the train kernels' diagonal.
      diag_reg_absolute_scale: take ``diag_reg`` in absolute units.
      trace_axes: the output axes absent from the kernels.
      **kernel_fn_kwargs: passed to every call of ``kernel_fn`` (e.g. ``params=params``).

    Returns:
      ``predict(t=None, x_test=None, get=None, compute_cov=False)``: ``t`` a number or array of
      steps (``None`` for ``∞``); ``x_test=None`` gives the train set; ``get`` ``"nngp"``,
      ``"ntk"`` or a tuple (``None``: both). Each kind gives the mean (``t``'s shape in front of
      the outputs' shape) or, with ``compute_cov``, a :class:`Gaussian` whose covariance is
      interleaved like the kernels. A string ``get`` returns one value, a tuple a named tuple.

    Example:
      >>> import jax.numpy as jnp, numpy as np
      >>> import ntk_zoo
      >>> f = lambda p, x: jnp.tanh(x @ p["w"]) @ p["v"]
      >>> params = {"w": jnp.eye(2), "v": jnp.ones((2, 1))}
      >>> kernel_fn = ntk_zoo.kernel_fn(f, get=("nngp", "ntk"))
      >>> x, y = jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([[1.0], [-1.0]])
      >>> fn = ntk_zoo.predict.gradient_descent_mse_ensemble(kernel_fn, x, y, params=params)
      >>> np.round(fn(None, x, "ntk"), 6).tolist()  # the train targets, reached at t = ∞
      [[1.0], [-1.0]]
      >>> fn(10.0, jnp.ones((3, 2)), "ntk", compute_cov=True).covariance.shape
      (3, 3)

    Reference: J. Lee et al., "Wide Neural Networks of Any Depth Evolve as Linear Models Under
    Gradient Descent", NeurIPS 2019.
    """
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate!r}.")
    y = np.asarray(y_train, np.float64)
    layout = _layout.target_layout(y, trace_axes)
    y_matrix = layout.to_matrix(y)
    n_out = y.size
    cache: dict[str, Any] = {}

    def train_kernels() -> dict[str, np.ndarray]:
        if "dd" not in cache:
            found = _kernels(kernel_fn(x_train, None, **kernel_fn_kwargs), kernel_fn)
            for k in found.values():
                _layout.check_train_kernel(k, layout)
            cache["dd"] = {g: np.asarray(v, np.float64) for g, v in found.items()}
        return cache["dd"]

    def kernel(kernels: dict, kind: str, where: str) -> np.ndarray:
        if kind not in kernels:
            raise ValueError(
                f"kernel_fn gives no {kind!r} kernel ({where}; it gives {sorted(kernels)}): "
                "build it with ntk_zoo.kernel_fn(f, get=('nngp', 'ntk')), or ask for fewer kinds "
                "(get=...; the covariance needs the NNGP)."
            )
        return kernels[kind]

    def eigen(kind: str) -> tuple[np.ndarray, np.ndarray]:
        if ("eig", kind) not in cache:
            a = _layout.as_matrix(kernel(train_kernels(), kind, "train-train"))
            a = _layout.regularise((a + a.T) / 2, diag_reg, diag_reg_absolute_scale)
            cache["eig", kind] = np.linalg.eigh(a)
        return cache["eig", kind]

    def predict(
        t: Any = None, x_test: Any = None, get: Any = None, compute_cov: bool = False
    ) -> Any:
        single, kinds = _layout.canonical_get(get, ("nngp", "ntk"))
        dd = train_kernels()
        td = None
        if x_test is not None:
            td = _kernels(kernel_fn(x_test, x_train, **kernel_fn_kwargs), kernel_fn)
        tt = None
        if compute_cov and x_test is not None:
            tt = _kernels(kernel_fn(x_test, None, **kernel_fn_kwargs), kernel_fn)
        if t is None:
            if "gp" not in cache:  # keeps its Cholesky factors across calls
                cache["gp"] = gp_inference(dd, y, diag_reg, diag_reg_absolute_scale, trace_axes)
            tt_arg = (tt or True) if compute_cov else None
            return cache["gp"](get if single else kinds, td, tt_arg)

        tau = np.asarray(t, np.float64) * learning_rate
        if np.any(tau < 0) or np.any(np.isnan(tau)):
            raise ValueError(f"Times must be >= 0 (or None for infinity), got {t}.")
        tau_col = tau.reshape(-1, 1)
        out = {}
        for g in kinds:
            lam, vec = eigen(g)
            lam_pos = np.maximum(lam, 0.0)
            with np.errstate(invalid="ignore", over="ignore"):
                decay = np.where(lam_pos > 0, np.exp(-lam_pos * tau_col / n_out), 1.0)  # e
            grown = 1.0 - decay  # 1 − e, 0 where λ = 0
            safe = np.where(lam_pos > 0, np.abs(lam), 1.0)
            residual = vec.T @ y_matrix  # (D, T)
            if td is None:
                free_shape = layout.kernel_shape[::2]
                mean = np.einsum("dk,tk,kc->tdc", vec, grown, residual)
            else:
                k_td = kernel(td, g, "test-train")
                _layout.check_test_kernel(k_td, layout)
                free_shape = k_td.shape[::2]
                td_vec = _layout.as_matrix(k_td) @ vec  # (M, D)
                mean = np.einsum("mk,tk,kc->tmc", td_vec, grown / safe, residual)
            mean = layout.from_matrix(mean, free_shape)
            mean = mean.reshape(tau.shape + mean.shape[1:])
            if not compute_cov:
                out[g] = mean
                continue
            nngp_dd = _layout.as_matrix(kernel(dd, "nngp", "train-train"))
            if td is None:
                e_mat = np.einsum("dk,tk,ek->tde", vec, decay, vec)
                if g == "nngp":
                    cov = np.einsum("dk,tk,ek->tde", vec, lam_pos * decay**2, vec)
                else:
                    cov = e_mat @ nngp_dd @ e_mat
            else:
                nngp_tt = _layout.as_matrix(kernel(tt, "nngp", "test-test"))
                if g == "nngp":
                    grown_2 = 1.0 - decay**2
                    cov = nngp_tt[None] - np.einsum("mk,tk,lk->tml", td_vec, grown_2 / safe, td_vec)
                else:
                    p_td = np.einsum("dk,tk,mk->tdm", vec, grown / safe, td_vec)  # P Θ(X, x)
                    nngp_td = _layout.as_matrix(kernel(td, "nngp", "test-train"))
                    cross = np.einsum("dm,tdl->tml", nngp_td.T, p_td).transpose(0, 2, 1)
                    quad = np.einsum("tdm,de,tel->tml", p_td, nngp_dd, p_td)
                    cov = nngp_tt[None] + quad - cross - cross.transpose(0, 2, 1)
            cov = _layout.from_matrix_pairs(cov, free_shape)
            out[g] = Gaussian(mean, cov.reshape(tau.shape + cov.shape[1:]))
        return _layout.package("Gaussians", single, kinds, out)

    return predict
