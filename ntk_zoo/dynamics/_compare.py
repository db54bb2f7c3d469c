"""Comparing two kernels: distance, change of spectrum, overlap of top eigenspaces."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ntk_zoo.spectrum import Spectrum, flatten_kernel, spectrum


def square_kernel(kernel: Any, name: str) -> np.ndarray:
    """``kernel`` as a float64 ``(n, n)`` or flattened ``(n·o, n·o)`` matrix, checked square."""
    k = np.asarray(kernel)
    if k.ndim not in (2, 4):
        raise ValueError(
            f"{name} has shape {k.shape}: expected an (n, n) kernel (trace_axes=(-1,)) or an "
            "(n, n, o, o) one (trace_axes=()), with diagonal_axes=()."
        )
    flat = flatten_kernel(k).astype(np.float64)
    if flat.shape[0] != flat.shape[1] or (k.ndim == 4 and k.shape[2] != k.shape[3]):
        raise ValueError(
            f"{name} has shape {k.shape}: these measures need the square Θ(x, x) (x2=None)."
        )
    return flat


def _pair(k1: Any, k2: Any) -> tuple[np.ndarray, np.ndarray]:
    if np.shape(k1) != np.shape(k2):
        raise ValueError(
            f"k1 has shape {np.shape(k1)} and k2 {np.shape(k2)}: compare kernels of the same "
            "examples, computed with the same trace_axes."
        )
    return square_kernel(k1, "k1"), square_kernel(k2, "k2")


def kernel_distance(k1: Any, k2: Any) -> float:
    """The kernel distance ``d(Θ₁, Θ₂) = 1 − ⟨Θ₁, Θ₂⟩_F / (‖Θ₁‖_F ‖Θ₂‖_F)`` (Fort et al. 2020).

    One minus the cosine between the kernels as vectors of entries: ``0`` exactly when
    ``Θ₂ = c·Θ₁`` with ``c > 0`` (a change of scale alone is no change of kernel), symmetric,
    in ``[0, 2]`` (``[0, 1]`` for positive semi-definite kernels, whose inner product is
    ``>= 0``). Both layouts, ``(n, n)`` and ``(n, n, o, o)`` (flattened as
    :func:`ntk_zoo.spectrum.flatten_kernel`, which keeps the Frobenius inner product).

    Args:
      k1, k2: kernels of the same shape.

    Returns:
      The distance as a float (float64 arithmetic).

    Example:
      >>> import numpy as np
      >>> from ntk_zoo.dynamics import kernel_distance
      >>> k = np.array([[2.0, 1.0], [1.0, 2.0]])
      >>> kernel_distance(k, 3 * k)
      0.0
      >>> round(kernel_distance(k, np.eye(2)), 4)  # 1 − 4 / (√10 · √2)
      0.1056

    Reference: S. Fort, G. K. Dziugaite, M. Paul, S. Kharaghani, D. M. Roy, S. Ganguli, "Deep
    learning versus kernel learning: an empirical study of loss landscape geometry and the time
    evolution of the Neural Tangent Kernel", NeurIPS 2020.
    """
    a, b = _pair(k1, k2)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        raise ValueError(
            f"kernel_distance is undefined for a zero kernel (‖k1‖_F = {na}, ‖k2‖_F = {nb})."
        )
    if np.array_equal(a, b):
        return 0.0  # exactly, whatever the rounding of the norms
    cosine = float(np.vdot(a / na, b / nb))
    return max(0.0, 1.0 - cosine)  # Cauchy–Schwarz: a negative value is rounding


class SpectralChange(NamedTuple):
    """Relative changes ``(new − old) / old`` of the trace, ``λ_max`` and ``κ``.

    ``condition_number`` is ``nan`` when either kernel's ``κ`` is infinite (a non-positive
    eigenvalue).
    """

    trace: float
    lambda_max: float
    condition_number: float


def spectral_change(k_old: Any, k_new: Any) -> SpectralChange:
    """How much the trace, the top eigenvalue and the condition number moved, relatively.

    ``Δ(s) = (s(Θ_new) − s(Θ_old)) / s(Θ_old)`` for ``s`` = ``tr Θ``, ``λ_max`` and
    ``κ = λ_max / λ_min``, the eigenvalues from :func:`ntk_zoo.spectrum.spectrum` (float64). Both
    layouts. Either argument may also be a :class:`ntk_zoo.spectrum.Spectrum` already computed
    (tracking many kernels against one, its eigendecomposition is then done once).

    Example:
      >>> import numpy as np
      >>> from ntk_zoo.dynamics import spectral_change
      >>> spectral_change(np.diag([4.0, 1.0]), np.diag([6.0, 1.0]))
      SpectralChange(trace=0.4, lambda_max=0.5, condition_number=0.5)
    """
    if isinstance(k_old, Spectrum) or isinstance(k_new, Spectrum):
        old, new = (k if isinstance(k, Spectrum) else spectrum(k) for k in (k_old, k_new))
        if old.eigenvalues.shape != new.eigenvalues.shape:
            raise ValueError(
                f"k_old has {old.eigenvalues.size} eigenvalues and k_new "
                f"{new.eigenvalues.size}: compare kernels of the same examples."
            )
    else:
        old, new = (spectrum(k) for k in _pair(k_old, k_new))

    def rel(x: float, y: float) -> float:
        if not (np.isfinite(x) and np.isfinite(y)):
            return float("nan")
        return (y - x) / x if x != 0 else float("nan")

    return SpectralChange(
        trace=rel(old.trace, new.trace),
        lambda_max=rel(old.lambda_max, new.lambda_max),
        condition_number=rel(old.condition_number, new.condition_number),
    )


def top_eigenvectors(kernel: Any, k: int) -> np.ndarray:
    """The ``k`` leading eigenvectors of a symmetric kernel as the columns of ``(dim, k)``."""
    a = square_kernel(kernel, "kernel")
    if not isinstance(k, int | np.integer) or not 0 < k <= a.shape[0]:
        raise ValueError(f"k must be an integer in 1..{a.shape[0]} (the kernel's size), got {k!r}.")
    _, vectors = np.linalg.eigh((a + a.T) / 2)
    return vectors[:, ::-1][:, :k]


def top_k_overlap(k1: Any, k2: Any, k: int) -> float:
    """The overlap ``‖U₁ᵀ U₂‖_F² / k`` of the top-``k`` eigenspaces of two kernels.

    ``U_i`` (``dim × k``) holds the ``k`` leading orthonormal eigenvectors of ``Θ_i``. The overlap
    is the mean of ``cos² θ_j`` over the principal angles ``θ_j`` between the two subspaces: ``1``
    when they coincide, ``0`` when they are orthogonal, ``k/dim`` on average for random
    subspaces. It is invariant to the sign and the rotation of eigenvectors within each subspace,
    but not well defined when ``λ_k = λ_{k+1}`` (the subspace itself is then ambiguous). Both
    layouts.

    Args:
      k1, k2: kernels of the same shape.
      k: the number of leading eigenvectors, ``1 <= k <= dim``.

    Example:
      >>> import numpy as np
      >>> from ntk_zoo.dynamics import top_k_overlap
      >>> top_k_overlap(np.diag([3.0, 2.0, 1.0]), np.diag([3.0, 1.0, 2.0]), 2)  # e₁ shared
      0.5
    """
    a, b = _pair(k1, k2)
    u1, u2 = top_eigenvectors(a, k), top_eigenvectors(b, k)
    return float(np.sum((u1.T @ u2) ** 2) / k)
