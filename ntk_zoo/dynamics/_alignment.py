"""Kernel–target alignment of an NTK with the labels, dense or matrix-free."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from ntk_zoo.dynamics._compare import square_kernel

FROBENIUS = ("exact", "hutchinson")


def label_matrix(y: Any, n: int, outputs: int | None = None) -> np.ndarray:
    """Targets as a float64 ``(n, c)`` matrix ``Y``, the label kernel being ``Y Yᵀ``.

    * integer labels ``(n,)`` become one-hot rows (``c`` = ``outputs`` if given, else the largest
      label + 1), so that ``(Y Yᵀ)_ij = 1`` when examples ``i`` and ``j`` share a class;
    * float targets ``(n,)`` are one column (``±1`` labels of a binary task, a regression target);
    * ``(n, c)`` arrays (one-hot rows, multi-output targets) are taken as they are.

    Example:
      >>> label_matrix([0, 2, 2], 3).tolist()
      [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]
    """
    y = np.asarray(y)
    if y.ndim == 0 or y.ndim > 2 or y.shape[0] != n:
        raise ValueError(
            f"y has shape {y.shape}; the kernel is over {n} examples: pass labels (n,), "
            "targets (n,) or (n, c) with the examples along axis 0."
        )
    if y.ndim == 1 and np.issubdtype(y.dtype, np.integer):
        if y.min(initial=0) < 0:
            raise ValueError(
                "Integer y are class labels and must be >= 0; pass ±1 labels as floats."
            )
        classes = int(y.max(initial=-1)) + 1 if outputs is None else outputs
        if y.max(initial=-1) >= classes:
            raise ValueError(f"Label {int(y.max())} does not fit the kernel's {classes} outputs.")
        return np.eye(classes)[y]
    y = y.astype(np.float64)
    return y[:, None] if y.ndim == 1 else y


def _targets(kernel_shape: tuple[int, ...], y: Any, centered: bool) -> np.ndarray:
    """The (centred) target as columns: ``(n, c)`` for ``(n, n)``, ``(n·o, 1)`` for 4-d."""
    n = kernel_shape[0]
    full = len(kernel_shape) == 4
    targets = label_matrix(y, n, kernel_shape[2] if full else None)
    if full and targets.shape != (n, kernel_shape[2]):
        raise ValueError(
            f"An (n, n, o, o) kernel of shape {kernel_shape} needs y as labels (n,) or targets "
            f"{(n, kernel_shape[2])}, got {np.shape(y)}."
        )
    if centered:
        targets = targets - targets.mean(0)  # H Y: centred over the examples
    return targets.reshape(-1, 1) if full else targets


def _ratio(numerator: float, k_norm: float, t_norm: float) -> float:
    if t_norm == 0:
        raise ValueError(
            "The (centred) label kernel is zero: every example has the same label, so the "
            "alignment is undefined; use centered=False or labels that vary."
        )
    if k_norm == 0:
        raise ValueError("The (centred) kernel is zero: the alignment is undefined.")
    return float(np.clip(numerator / (k_norm * t_norm), -1.0, 1.0))


def _center(k: np.ndarray, full: bool, n: int) -> np.ndarray:
    """``H Θ H`` (``(H ⊗ I_o) Θ (H ⊗ I_o)`` for a flattened 4-d kernel)."""
    o = k.shape[0] // n if full else 1
    k4 = k.reshape(n, o, n, o)
    k4 = k4 - k4.mean(0, keepdims=True)
    k4 = k4 - k4.mean(2, keepdims=True)
    return k4.reshape(k.shape)


def kernel_alignment(kernel: Any, y: Any, *, centered: bool = True) -> float:
    """Kernel–target alignment ``A(Θ, Y Yᵀ) = ⟨Θ_c, T_c⟩_F / (‖Θ_c‖_F ‖T_c‖_F)``.

    With ``H = I − 11ᵀ/n`` the centring matrix, ``Θ_c = HΘH`` and ``T_c = H Y Yᵀ H`` (Cortes,
    Mohri and Rostamizadeh 2012); ``centered=False`` drops ``H`` (Cristianini et al. 2002's
    uncentred alignment). Without centring, a kernel with a large constant component
    (``Θ ≈ c·11ᵀ``, common for NTKs) aligns with any labels whose kernel has one; centring
    removes that. The value is a cosine: in ``[−1, 1]``, ``1`` when ``Θ ∝ Y Yᵀ``
    (``Θ_c ∝ T_c`` when centred).

    ``y`` may be integer labels ``(n,)`` (one-hot: ``T_ij = 1`` for examples of the same
    class), float targets ``(n,)`` or ``(n, c)`` (see :func:`label_matrix`). For an
    ``(n, n, o, o)`` kernel (``trace_axes=()``, flattened example-major as
    :func:`ntk_zoo.spectrum.flatten_kernel`) the target is the ``(n·o)`` vector ``vec(Y)``,
    ``Y`` of shape ``(n, o)``, with ``T = vec(Y) vec(Y)ᵀ`` and centring over the examples,
    ``H ⊗ I_o``.

    Args:
      kernel: ``Θ(x, x)``, ``(n, n)`` or ``(n, n, o, o)``.
      y: the labels or targets of the same ``n`` examples.
      centered: centre both kernels (default) or not.

    Returns:
      The alignment, a float in ``[−1, 1]``.

    Example:
      >>> import numpy as np
      >>> from ntk_zoo.dynamics import kernel_alignment
      >>> y = np.array([0, 0, 1, 1])
      >>> ideal = (y[:, None] == y[None, :]).astype(float)  # Y Yᵀ for one-hot Y
      >>> kernel_alignment(2 * ideal, y)
      1.0
      >>> round(kernel_alignment(np.eye(4), y), 4)  # ⟨H, T_c⟩ / (‖H‖ ‖T_c‖) = 2 / (√3 · 2)
      0.5774

    References: C. Cortes, M. Mohri, A. Rostamizadeh, "Algorithms for Learning Kernels Based on
    Centered Alignment", JMLR 2012; N. Cristianini, J. Shawe-Taylor, A. Elisseeff, J. Kandola,
    "On Kernel-Target Alignment", NeurIPS 2002.
    """
    k = square_kernel(kernel, "kernel")
    shape = np.shape(kernel)
    targets = _targets(shape, y, centered)
    full = len(shape) == 4
    if centered:
        k = _center(k, full, shape[0])
    numerator = float(np.sum(targets * (k @ targets)))  # tr(Yᵀ Θ_c Y) = ⟨Θ_c, Y Yᵀ⟩
    t_norm = float(np.linalg.norm(targets.T @ targets))  # ‖Y Yᵀ‖_F = ‖Yᵀ Y‖_F
    return _ratio(numerator, float(np.linalg.norm(k)), t_norm)


def _product_fn(op: Any, chunk: int):
    """``V ↦ Θ V`` for a ``(size, m)`` float64 NumPy matrix, ``chunk`` columns per program."""
    many = jax.jit(jax.vmap(op.apply_blocks, in_axes=(None, None, 0)))
    rows = (np.arange(op.n_blocks * op.block_size) < op.n).reshape(op.n_blocks, op.block_size)

    def products(v: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, v.shape[1], chunk):
            cols = v[:, start : start + chunk]
            m = cols.shape[1]
            if m < chunk:  # zero columns: one compiled shape for every call
                cols = np.pad(cols, ((0, 0), (0, chunk - m)))
            blocks = jax.numpy.stack([op.to_blocks(c) for c in cols.T])
            res = np.asarray(many(op.params, op.x_blocks, blocks), np.float64)
            out.append(res[:m, rows].reshape(m, -1).T)  # padded rows of the blocks dropped
        return np.concatenate(out, axis=1)

    return products


def kernel_alignment_matrix_free(
    operator: Any,
    y: Any,
    *,
    centered: bool = True,
    frobenius: str = "exact",
    num_probes: int = 64,
    chunk: int = 16,
    seed: int = 0,
) -> float:
    """:func:`kernel_alignment` of a kernel too large to form, from its products ``Θ·v``.

    ``operator`` is an :class:`ntk_zoo.spectrum.NtkOperator` (:func:`ntk_zoo.spectrum.ntk_operator`,
    built on NTK-vector products; ``trace_axes=(-1,)`` for the ``(n, n)`` kernel, ``()`` for the
    flattened ``(n·o, n·o)`` one). With ``Y_c = H Y`` the centred targets (``Y`` if not
    ``centered``):

    * the numerator ``⟨Θ_c, T_c⟩ = tr(Y_cᵀ Θ Y_c)`` is exact: one product per column of ``Y_c``
      (``c`` columns; one for the flattened layout), computed together;
    * ``‖Θ_c‖_F² = Σ_i ‖H Θ H e_i‖²``: with ``frobenius="exact"`` computed column block by
      column block (``dim`` products, ``chunk`` at a time; memory ``chunk`` vectors, never the
      matrix); with ``"hutchinson"`` estimated as the mean of ``‖H Θ H z‖²`` over ``num_probes``
      Rademacher vectors ``z`` (unbiased, ``E[z zᵀ] = I``; relative standard error of the square
      about ``√(2/num_probes)`` at worst, much less when a few eigenvalues dominate, as in NTKs).

    Args:
      operator: the kernel as a matrix-free operator.
      y: labels or targets, as for :func:`kernel_alignment`.
      centered: centre (default) or not.
      frobenius: ``"exact"`` or ``"hutchinson"``.
      num_probes: Rademacher probes for ``"hutchinson"``.
      chunk: products computed together (vmapped) per compiled call; every call has this many
        columns (zero-padded), so one program is compiled.
      seed: seed of the probes.

    Returns:
      The alignment (float). With ``"exact"`` it equals the dense value up to rounding.

    Example:
      >>> import jax.numpy as jnp
      >>> from ntk_zoo import ntk_fn
      >>> from ntk_zoo.spectrum import ntk_operator
      >>> from ntk_zoo.dynamics import kernel_alignment, kernel_alignment_matrix_free
      >>> f = lambda p, x: jnp.tanh(x @ p)
      >>> x, p = jnp.arange(12.0).reshape(4, 3) / 12, jnp.ones((3, 2)) / 3
      >>> y = jnp.array([0, 1, 0, 1])
      >>> dense = kernel_alignment(ntk_fn(f)(x, None, p), y)
      >>> free = kernel_alignment_matrix_free(ntk_operator(f, p, x, block_size=3), y)
      >>> abs(dense - free) < 1e-5
      True
    """
    if frobenius not in FROBENIUS:
        raise ValueError(f"Unknown frobenius={frobenius!r}; use one of {FROBENIUS}.")
    if not hasattr(operator, "apply_blocks"):
        raise TypeError(
            f"operator must be an ntk_zoo.spectrum.NtkOperator (from ntk_operator), got "
            f"{type(operator).__name__}; for a formed kernel use kernel_alignment."
        )
    if not isinstance(chunk, int | np.integer) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}.")
    n, size = operator.n, operator.size
    shape = (n, n) if operator.averaged else (n, n, operator.n_outputs, operator.n_outputs)
    targets = _targets(shape, y, centered)
    products = _product_fn(operator, int(chunk))
    o = size // n

    def center(v: np.ndarray) -> np.ndarray:  # (H ⊗ I_o) on the columns of v
        if not centered:
            return v
        rows = v.reshape(n, o, -1)
        return (rows - rows.mean(0, keepdims=True)).reshape(v.shape)

    numerator = float(np.sum(targets * products(targets)))  # H Y_c = Y_c: no centring needed
    t_norm = float(np.linalg.norm(targets.T @ targets))
    if frobenius == "exact":
        sq = 0.0
        for start in range(0, size, chunk):  # e_i, a chunk of columns at a time
            cols = np.eye(size, min(chunk, size - start), -start)  # columns start, start+1, …
            sq += float(np.sum(center(products(center(cols))) ** 2))
    else:
        if not isinstance(num_probes, int | np.integer) or num_probes < 1:
            raise ValueError(f"num_probes must be a positive integer, got {num_probes!r}.")
        z = np.random.default_rng(seed).choice([-1.0, 1.0], size=(size, int(num_probes)))
        sq = float(np.sum(center(products(center(z))) ** 2)) / num_probes
    return _ratio(numerator, float(np.sqrt(sq)), t_norm)
