"""Dense eigen-decomposition of a kernel matrix."""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from ntk_zoo.spectrum._streamed import check_lambda_min

DENSE_LIMIT = 1 << 27  # float64 bytes of a kernel file still eigendecomposed whole (n ≈ 4,096)


class Spectrum(NamedTuple):
    """Eigenvalues (descending) and the conditioning figures derived from them.

    ``condition_number`` is ``lambda_max / lambda_min`` and ``inf`` when ``lambda_min <= 0``;
    ``n_nonpositive`` counts eigenvalues ``<= 0`` (zero or negative from rounding), reported
    rather than hidden by a fudge term. ``effective_rank`` is ``exp`` of the entropy of the
    normalised positive eigenvalues (Roy & Vetterli, 2007).

    ``path`` says how they were found: ``"dense"`` (every eigenvalue, by ``eigvalsh``) or
    ``"streamed"`` (block Lanczos over rows read from the kernel's file, see :func:`spectrum`).
    On the streamed path ``eigenvalues`` holds the largest Ritz values only, the residual norms
    ``lambda_max_residual`` and ``lambda_min_residual`` bound the distance from each estimate to
    an eigenvalue of the kernel, ``effective_rank`` is a stochastic estimate with standard error
    ``effective_rank_error`` (both exact, errors 0, once the Krylov basis fills the space), and
    ``n_nonpositive`` is a lower bound (the Ritz values ``<= 0``, by interlacing).

    ``lambda_min_method`` says how ``lambda_min`` was found: ``"dense"``, ``"lanczos"`` (the
    smallest Ritz value of the same run) or ``"shift_invert"`` (Lanczos on ``(K + shift·I)⁻¹``
    from an out-of-core Cholesky; ``K + shift·I`` factorised, so ``lambda_min > −shift``;
    ``shift`` is negative when a second factorisation just below ``λ_min`` gave it).
    """

    eigenvalues: np.ndarray
    trace: float
    lambda_max: float
    lambda_min: float
    condition_number: float
    effective_rank: float
    n_nonpositive: int
    path: str = "dense"
    lambda_max_residual: float = 0.0
    lambda_min_residual: float = 0.0
    effective_rank_error: float = 0.0
    lambda_min_method: str = "dense"
    shift: float = 0.0


def flatten_kernel(kernel: np.ndarray) -> np.ndarray:
    """``(n, n)`` stays; ``(n1, n2, o, o)`` (``trace_axes=()``) becomes ``(n1·o, n2·o)``."""
    k = np.asarray(kernel)
    if k.ndim == 2:
        return k
    if k.ndim == 4:
        n1, n2, o1, o2 = k.shape
        return k.transpose(0, 2, 1, 3).reshape(n1 * o1, n2 * o2)
    raise ValueError(
        f"Expected an (n, n) or (n, n, o, o) kernel, got shape {k.shape}; compute it with "
        "trace_axes=(-1,) or trace_axes=() and diagonal_axes=()."
    )


def spectrum(
    kernel: np.ndarray | str | os.PathLike,
    *,
    float64: bool = True,
    dense_limit: int | None = None,
    memory_budget: int | None = None,
    k: int = 32,
    tol: float = 1e-7,
    max_passes: int | None = 16,
    key: int = 0,
    lambda_min: str = "auto",
    factor_dir: str | os.PathLike | None = None,
) -> Spectrum:
    """The spectrum of a symmetric kernel (``Θ(x, x)``): dense, or streamed from its file.

    **Dense** (``path="dense"``): ``numpy.linalg.eigvalsh`` of ``(K + Kᵀ)/2`` in float64, every
    eigenvalue. **Streamed** (``path="streamed"``), for a kernel on disk (a ``.npy`` path or a
    ``np.memmap``, e.g. what ``batched(..., out=...)`` returns) whose float64 copy would exceed
    ``dense_limit`` bytes: the matrix is never loaded. Block Lanczos (16 vectors a pass, full
    reorthogonalisation) multiplies ``(K + Kᵀ)/2`` by rows read ``memory_budget`` bytes at a
    time; Rayleigh–Ritz on the Krylov basis ``Q`` gives ``λ_max`` and ``λ_min`` with residuals
    ``r = ‖K y − θ y‖`` (some eigenvalue lies in ``[θ − r, θ + r]``), and it stops once both
    ``r <= tol·|θ|``, after ``max_passes`` passes over the file, when the basis (``Q`` and
    ``K Q``, float64) would exceed ``memory_budget``, or when it fills the space (then it is
    exact); it warns when it stops short of ``tol``. The trace is exact, from the
    diagonal; the effective rank is a Hutchinson estimate ``tr g(K) ≈ mean_i z_iᵀ g(K) z_i``
    (``g(λ) = λ log λ``, the 16 Rademacher start vectors ``z_i``, Gauss quadrature from the same
    basis) with its standard error.

    Lanczos finds the bottom of a clustered NTK spectrum slowly, so the streamed ``λ_min`` is
    found by **shift-invert** (``lambda_min_method="shift_invert"``): a blocked Cholesky of
    ``K + δI`` written tile by tile to a temporary file (``factor_dir``, default beside the
    kernel; ``N²/2`` float64, deleted afterwards; ``δ = 0`` unless the kernel is numerically
    indefinite, then the least of ``4ʲ·N·eps·max K_ii`` that factorises), then block Lanczos on
    ``(K + δI)⁻¹`` by streamed triangular solves, which converges to ``1/(λ_min + δ)`` in a few
    steps (for a tightly clustered bottom, after a second factorisation at ``δ = r − λ̂``, just
    below the first estimate); ``lambda_min`` is the Rayleigh quotient of its vector and
    ``lambda_min_residual`` its residual against ``K`` (one more pass). Cost: ``N³/3`` flops a
    factorisation (``N = 8,000``: 1.7e11, seconds of BLAS), ``N³/(6t)`` float64 reads of the
    factor file for tiles of ``t`` rows (three ``t × N`` panels in ``memory_budget``) and two
    reads of it per Lanczos step.

    Args:
      kernel: ``(n, n)`` or ``(n, n, o, o)`` (``trace_axes=()``) array, ``np.memmap``, or the
        path of a ``.npy`` file holding one.
      float64: dense path: eigen-decompose in float64 (else in the kernel's dtype).
      dense_limit: float64 bytes up to which a kernel on disk is loaded and decomposed whole
        (default 128 MiB, ``n ≈ 4,096``); ``0`` streams every file. In-memory arrays are
        decomposed whole unless a ``dense_limit`` is given and exceeded.
      memory_budget: streamed path: bytes of rows read at once, and of the Krylov basis
        (default 64 MiB each).
      k: streamed path: how many of the largest eigenvalues to return.
      tol: streamed path: relative residual at which ``λ_max`` and ``λ_min`` count as found.
      max_passes: streamed path: the most reads of the file (``16·max_passes`` Krylov
        vectors); ``None``: as many as ``memory_budget`` holds.
      key: streamed path: seed of the start vectors.
      lambda_min: streamed path: ``"shift_invert"``, ``"lanczos"`` (the smallest Ritz value,
        with its residual), or ``"auto"``: shift-invert while ``N³/3 <= 1e13`` flops
        (``N ≈ 31,000``) and the factor fits on disk, else Lanczos.
      factor_dir: streamed path: directory of the temporary Cholesky factor (default: the
        kernel file's, else the system's temporary directory).

    Returns:
      A :class:`Spectrum`; its ``path`` tells which way it was computed.

    Example:
      >>> import os, tempfile
      >>> import numpy as np
      >>> s = spectrum(np.diag([4.0, 1.0, 2.0]))
      >>> s.eigenvalues.tolist(), s.condition_number
      ([4.0, 2.0, 1.0], 4.0)
      >>> path = os.path.join(tempfile.mkdtemp(), "kernel.npy")
      >>> np.save(path, np.diag(np.arange(1.0, 41.0)))
      >>> streamed = spectrum(path, dense_limit=0, memory_budget=1 << 16)
      >>> streamed.path, round(streamed.lambda_max, 9), round(streamed.lambda_min, 9)
      ('streamed', 40.0, 1.0)
    """
    check_lambda_min(lambda_min)  # a typo is an error on the dense path too, not ignored
    if isinstance(kernel, str | os.PathLike):
        kernel = np.load(os.fspath(kernel), mmap_mode="r")
    on_disk = isinstance(kernel, np.memmap)
    limit = DENSE_LIMIT if dense_limit is None and on_disk else dense_limit
    if limit is not None and np.size(kernel) * 8 > limit:
        from ntk_zoo.spectrum._streamed import streamed_spectrum

        found = streamed_spectrum(
            kernel,
            memory_budget=memory_budget,
            k=k,
            tol=tol,
            max_passes=max_passes,
            key=key,
            lambda_min=lambda_min,
            factor_dir=factor_dir,
        )
        return Spectrum(**{name: found[name] for name in Spectrum._fields})
    matrix = flatten_kernel(kernel)
    if matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"A spectrum needs a square kernel Θ(x, x); got shape {matrix.shape}.")
    matrix = matrix.astype(np.float64 if float64 else matrix.dtype)
    eig = np.linalg.eigvalsh((matrix + matrix.T) / 2)[::-1]
    lmax, lmin = float(eig[0]), float(eig[-1])
    positive = eig[eig > 0]
    p = positive / positive.sum() if positive.size else positive
    return Spectrum(
        eigenvalues=eig,
        trace=float(np.trace(matrix)),
        lambda_max=lmax,
        lambda_min=lmin,
        condition_number=lmax / lmin if lmin > 0 else float("inf"),
        effective_rank=float(np.exp(-(p * np.log(p)).sum())) if p.size else 0.0,
        n_nonpositive=int((eig <= 0).sum()),
    )
