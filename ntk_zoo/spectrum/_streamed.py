"""Spectra of kernels too large to load: block Lanczos on row blocks streamed from the file.

A kernel written by ``batched(..., out="kernel.npy")`` is read a bounded number of rows at a
time (mapped read-only for one read, cast into one reused float64 buffer, so neither the matrix
nor its pages stay in this process's memory). Each pass over the file multiplies the symmetric
part ``(K + Kᵀ)/2`` by a block of ``width`` vectors; the block Krylov basis (full
reorthogonalisation) and its images are kept in float64, and Rayleigh–Ritz on that basis gives
the extreme eigenvalues with their residual norms ``‖K y − θ y‖`` (an eigenvalue of ``K`` lies
within that distance of ``θ``). The trace is exact (from the diagonal); the effective rank is
exact when the basis fills the space, else a Hutchinson estimate with its standard error.
``λ_min``, at the bottom of a clustered spectrum where Lanczos on ``K`` is slow, comes from
shift-invert on an out-of-core Cholesky factor (``_shift_invert.py``) unless the basis filled
the space or the factorisation would cost too much.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import numpy as np

from ntk_zoo.spectrum._pages import map_pages
from ntk_zoo.spectrum._threads import few_threads

CAST_CHUNK = 2 << 20  # bytes of float64 rows cast and multiplied at a time (in cache)
STREAM_BUDGET = 64 << 20  # bytes of rows in flight, plus as much again for the Krylov basis


LAMBDA_MIN = ("auto", "shift_invert", "lanczos")  # how the streamed path finds λ_min


def check_lambda_min(lambda_min: str) -> None:
    if lambda_min not in LAMBDA_MIN:
        raise ValueError(
            f"lambda_min={lambda_min!r}: expected 'auto', 'shift_invert' or 'lanczos'."
        )


class RowStream:
    """A square kernel, ``(n, n)`` or ``(n, n, o, o)``, read as rows of its ``(N, N)`` matrix.

    ``N = n·o``; rows are ordered ``(example, logit)`` like :func:`flatten_kernel`.
    """

    def __init__(self, kernel: Any, memory_budget: int, rows: int | None = None):
        self.file = _backing_file(kernel)
        self.array = kernel
        shape = tuple(kernel.shape)
        if len(shape) == 2:
            n, o = shape[0], 1
            square = shape[0] == shape[1]
        elif len(shape) == 4:
            n, o = shape[0], shape[2]
            square = shape[0] == shape[1] and shape[2] == shape[3]
        else:
            raise ValueError(
                f"Expected an (n, n) or (n, n, o, o) kernel, got shape {shape}; compute it with "
                "trace_axes=(-1,) or trace_axes=() and diagonal_axes=()."
            )
        if not square:
            raise ValueError(f"A spectrum needs a square kernel Θ(x, x); got shape {shape}.")
        self.n, self.o, self.size = n, o, n * o
        self.dtype = np.dtype(kernel.dtype)
        per_example = self.size * o * (self.dtype.itemsize + 2 * 8)  # read, cast, reorder
        if rows is None:
            rows = int(memory_budget) // max(1, per_example)
        self.rows = max(1, min(n, rows))  # examples a read
        # The float64 rows a read returns, reused: a fresh array a read cost a page fault per
        # 4 KiB (a third of a pass's casting time on the 8,000-example kernel).
        self._rows64: np.ndarray | None = None
        self._chunk64: np.ndarray | None = None  # matmat's cast, a few examples at a time
        self._diagonal: np.ndarray | None = None  # found by the first whole pass

    def _raw(self, start: int, stop: int) -> np.ndarray:
        """Examples ``start:stop`` as stored: a read-only mapping of the page cache's rows (see
        ``_pages.py``; unmapped when the array goes) or a slice of the in-memory array."""
        if self.file is None:
            return np.asarray(self.array[start:stop])
        path, offset = self.file
        shape = (stop - start, *self.array.shape[1:])
        row_bytes = self.dtype.itemsize * int(np.prod(shape[1:]))
        fd = os.open(path, os.O_RDONLY)
        try:
            return map_pages(fd, offset + start * row_bytes, shape, self.dtype)
        finally:
            os.close(fd)

    def _cast(self, block: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``block`` of examples as float64 rows ``(examples·o, N)`` in ``out``'s first rows."""
        out = out[: block.shape[0] * self.o]
        if block.ndim == 2:
            np.copyto(out, block)
        else:  # (examples, n, o, o) → (examples, o, n, o): the cast and the reorder in one copy
            np.copyto(out.reshape(len(block), self.o, self.n, self.o), block.transpose(0, 2, 1, 3))
        return out

    def _read(self, start: int, stop: int) -> np.ndarray:
        """Examples ``start:stop`` as float64 rows ``((stop-start)·o, N)``, in a buffer that the
        next read overwrites."""
        if self._rows64 is None:
            self._rows64 = np.empty((self.rows * self.o, self.size))
        return self._cast(self._raw(start, stop), self._rows64)

    def release(self) -> None:
        """Drop the read buffers (a later read allocates them again)."""
        self._rows64 = self._chunk64 = None

    def spans(self) -> list[tuple[int, int]]:
        return [(s, min(s + self.rows, self.n)) for s in range(0, self.n, self.rows)]

    symmetric = False  # set once a pass found K v = Kᵀ v (kernels of x2=None are mirrored)

    def matmat(self, v: np.ndarray) -> np.ndarray:
        """``((K + Kᵀ)/2) v`` for ``v`` of shape ``(N, b)``: one pass over the rows.

        The first pass computes ``K v`` and ``Kᵀ v``; if they agree to rounding (a symmetric
        kernel, as ``batched`` writes for ``x2=None``), later passes compute ``K v`` only.
        """
        ahead = np.zeros_like(v)
        back = None if self.symmetric else np.zeros_like(v)
        diagonal = np.empty(self.size) if self._diagonal is None else None
        # Cast and multiply a few examples at a time, in a buffer that stays in cache (2 MiB):
        # a pass over the 8,000-example kernel took 0.13 s of CPU so, 0.17 s casting a whole
        # read first and multiplying it from memory.
        chunk = max(1, min(self.rows, CAST_CHUNK // (8 * self.size * self.o)))
        if self._chunk64 is None:
            self._chunk64 = np.empty((chunk * self.o, self.size))
        for start, stop in self.spans():
            block = self._raw(start, stop)
            for first in range(start, stop, chunk):
                last = min(first + chunk, stop)
                rows = self._cast(block[first - start : last - start], self._chunk64)
                r = slice(first * self.o, last * self.o)
                ahead[r] = rows @ v  # (one BLAS thread: a few ms a product, see _threads.py)
                if back is not None:
                    back += rows.T @ v[r]
                if diagonal is not None:
                    diagonal[r] = _diagonal_of(rows, r)
            del block
        if diagonal is not None:
            self._diagonal = diagonal
        if back is None:
            return ahead
        scale = float(np.abs(ahead).max()) or 1.0
        self.symmetric = float(np.abs(ahead - back).max()) <= 1e-13 * scale
        return (ahead + back) / 2

    def diagonal(self) -> np.ndarray:
        """The ``N`` diagonal entries, in float64 (kept from the first :meth:`matmat` pass, else
        one pass of their own)."""
        if self._diagonal is None:
            out = np.empty(self.size)
            for start, stop in self.spans():
                r = slice(start * self.o, stop * self.o)
                out[r] = _diagonal_of(self._read(start, stop), r)
            self._diagonal = out
        return self._diagonal


def _diagonal_of(rows: np.ndarray, r: slice) -> np.ndarray:
    """The diagonal entries of the rows ``r`` of the matrix, given those rows."""
    return rows[:, r].diagonal().copy()


def _backing_file(kernel: Any) -> tuple[str, int] | None:
    """``(path, data offset)`` when ``kernel`` is a whole ``.npy`` file mapped in C order."""
    name = getattr(kernel, "filename", None)
    if not isinstance(kernel, np.memmap) or name is None or not kernel.flags.c_contiguous:
        return None
    try:
        whole = np.load(name, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if whole.shape != kernel.shape or whole.dtype != kernel.dtype or whole.offset != kernel.offset:
        return None  # a view of part of the file: read through the array
    return str(name), int(whole.offset)


def _orthonormal_block(
    w: np.ndarray, basis: np.ndarray, scale: float, rng: np.random.Generator
) -> np.ndarray:
    """Rows of ``w`` made orthonormal to the rows of ``basis`` and to each other.

    Block Gram–Schmidt twice, then a QR. A row that vanishes (an invariant subspace) is replaced
    by a random direction orthogonal to everything, so the basis keeps growing and repeated
    eigenvalues are found.
    """
    for _ in range(2):
        w = w - (w @ basis.T) @ basis
    q, r = np.linalg.qr(w.T)
    q = q.T
    tiny = math.sqrt(w.shape[1]) * np.finfo(np.float64).eps * max(scale, 1e-300)
    for c in np.flatnonzero(np.abs(np.diag(r)) <= tiny):
        row = rng.standard_normal(w.shape[1])
        others = np.delete(q, c, axis=0)
        for _ in range(2):
            row = row - (basis @ row) @ basis - (others @ row) @ others
        q[c] = row / np.linalg.norm(row)
    return q


def _banded_eigh(a: np.ndarray, band: int, *, select: bool) -> tuple[np.ndarray, np.ndarray]:
    """Eigenpairs of the projected ``Qᵀ K Q``, block tridiagonal up to rounding (full
    reorthogonalisation): LAPACK's banded solver, ``O(m²·band)`` instead of ``O(m³)``.

    ``select``: only the smallest and the largest pair. Entries outside the band are at rounding
    level; the residuals are computed from the true products, so the dropped ones are accounted.
    """
    from scipy.linalg import eig_banded

    m = a.shape[0]
    u = min(band, m - 1)
    sym = (a + a.T) / 2
    packed = np.zeros((u + 1, m))
    for d in range(u + 1):  # upper form: packed[u - d, j] = a[j - d, j]
        packed[u - d, d:] = np.diagonal(sym, d)
    if not select:
        return eig_banded(packed)
    low, low_vec = eig_banded(packed, select="i", select_range=(0, 0))
    high, high_vec = eig_banded(packed, select="i", select_range=(m - 1, m - 1))
    return np.r_[low, high], np.c_[low_vec, high_vec]


def streamed_spectrum(
    kernel: Any,
    *,
    memory_budget: int | None = None,
    k: int = 32,
    width: int = 16,
    tol: float = 1e-7,
    max_passes: int | None = 16,
    key: int = 0,
    lambda_min: str = "auto",
    factor_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The extreme eigenvalues of a kernel file, by block Lanczos over streamed rows.

    ``λ_min`` by shift-invert (``_shift_invert.py``) for ``lambda_min="shift_invert"``, and for
    ``"auto"`` when its ``N³/3`` flops are at most ``SHIFT_INVERT_FLOPS`` and the factor fits on
    disk; else (``"lanczos"``) the smallest Ritz value of the same Lanczos run.

    Returns a dict of :class:`~ntk_zoo.spectrum.Spectrum`'s fields (``eigenvalues`` holds the
    ``k`` largest Ritz values) plus ``passes`` (reads of the whole file) and, after a
    shift-invert, ``shift_invert`` (its figures: solves, factorisations, seconds).
    """
    from ntk_zoo.spectrum import _shift_invert as si

    check_lambda_min(lambda_min)
    with few_threads():  # (see _threads.py)
        budget = STREAM_BUDGET if memory_budget is None else int(memory_budget)
        stream = RowStream(kernel, budget)
        size = stream.size
        invert = False
        if lambda_min == "shift_invert" or (
            lambda_min == "auto" and size**3 / 3 <= si.SHIFT_INVERT_FLOPS
        ):
            directory = si.factor_directory(kernel, factor_dir)
            why_not = si.can_shift_invert(
                size, si.tile_examples(stream, budget) * stream.o, directory
            )
            if why_not and lambda_min == "shift_invert":
                raise OSError(f"lambda_min='shift_invert': {why_not}; pass factor_dir= elsewhere.")
            invert = why_not is None
        rng = np.random.default_rng(key)
        width = max(1, min(int(width), size))
        cap = max(width, budget // (2 * 8 * size))  # basis and its images, float64
        if max_passes is not None:
            cap = min(cap, int(max_passes) * width)
        cap = min(cap, size)
        basis = np.empty((cap, size))  # rows: orthonormal vectors (contiguous slices)
        images = np.empty((cap, size))  # rows: their products with K
        projected = np.zeros((cap, cap))
        probes = rng.choice([-1.0, 1.0], (size, width))
        q, r0 = np.linalg.qr(probes)
        q = q.T
        m, passes, scale = 0, 0, 0.0
        previous: tuple[np.ndarray, float] | None = None  # the last pass's top Ritz values, erank
        while True:
            b = q.shape[0]
            basis[m : m + b] = q
            images[m : m + b] = stream.matmat(q.T).T
            m += b
            passes += 1
            fresh = basis[:m] @ images[m - b : m].T  # the new columns of Qᵀ K Q
            projected[:m, m - b : m] = fresh
            projected[m - b : m, :m] = fresh.T
            theta, s = _banded_eigh(projected[:m, :m], 2 * width, select=False)
            ends, vecs = theta[[0, -1]], s[:, [0, -1]]
            scale = max(scale, float(np.abs(ends).max()))
            resid = [
                float(np.linalg.norm(v @ images[:m] - t * (v @ basis[:m])))
                for t, v in zip(ends, vecs.T)
            ]
            if m == size:
                converged = True
            elif invert and cap < size:  # (a basis that can fill the space is exact: fill it)
                converged, previous = _settled(theta, s, r0, k, resid[1], tol, previous)
            else:
                converged = all(r <= tol * abs(t) for r, t in zip(resid, ends))
            if converged or m + 1 > cap:
                break
            q = _orthonormal_block(images[m - b : m], basis[:m], scale, rng)[: min(width, cap - m)]
        diagonal = stream.diagonal()  # read by the first pass
        trace = float(diagonal.sum())
        exhausted = m == size
        if not converged and not (invert and resid[1] <= tol * abs(ends[1])):
            lmin_note = "" if invert else f", lambda_min {resid[0] / max(abs(ends[0]), 1e-300):.2g}"
            warnings.warn(
                f"The streamed spectrum stopped after {passes} passes ({m} Krylov vectors: "
                f"max_passes or all that memory_budget={budget} bytes holds) with relative "
                f"residuals lambda_max {resid[1] / abs(ends[1]):.2g}{lmin_note} (tol={tol:g}): "
                "raise max_passes and memory_budget for more, or read the residuals as the "
                "accuracy.",
                stacklevel=3,
            )
        if exhausted:
            resid = [0.0, 0.0]  # the basis is the whole space: Rayleigh–Ritz is the eigensolver
        descending = theta[::-1]
        lmax, lmin = float(descending[0]), float(descending[-1])
        if exhausted:
            positive = descending[descending > 0]
            p = positive / positive.sum() if positive.size else positive
            erank = float(np.exp(-(p * np.log(p)).sum())) if p.size else 0.0
            erank_error = 0.0
        else:
            erank, erank_error = _effective_rank_estimate(theta, s[: r0.shape[0]], r0)
        eigenvalues = descending[: min(k, m)].copy()
        n_nonpositive = int((theta <= 0).sum())  # a lower bound, by interlacing
        method, found = "lanczos", None
        if invert and not exhausted:  # (a full basis made Lanczos exact already)
            del basis, images
            stream.release()
            found = si.shift_invert_lambda_min(
                stream,
                diagonal=diagonal,
                memory_budget=budget,
                directory=si.factor_directory(kernel, factor_dir),
                tol=tol,
                key=key,
            )
            method, lmin, resid[0] = "shift_invert", found["lambda_min"], found["residual"]
            n_nonpositive = max(n_nonpositive, int(lmin <= 0))
            if not found["converged"]:
                warnings.warn(
                    f"The shift-invert Lanczos for lambda_min stopped after {found['solves']} "
                    f"solves short of tol={tol:g}; its residual against K is {resid[0]:.2g}.",
                    stacklevel=3,
                )
        return dict(
            eigenvalues=eigenvalues,
            trace=trace,
            lambda_max=lmax,
            lambda_min=lmin,
            condition_number=lmax / lmin if lmin > 0 else float("inf"),
            effective_rank=erank,
            n_nonpositive=n_nonpositive,
            path="streamed",
            lambda_min_method=method,
            shift=found["shift"] if found else 0.0,
            lambda_max_residual=resid[1],
            lambda_min_residual=resid[0],
            effective_rank_error=erank_error,
            passes=passes,
            converged=bool(converged),
            **({"shift_invert": found} if found else {}),
        )


def _settled(
    theta: np.ndarray,
    s: np.ndarray,
    r0: np.ndarray,
    k: int,
    lmax_residual: float,
    tol: float,
    previous: tuple[np.ndarray, float] | None,
) -> tuple[bool, tuple[np.ndarray, float]]:
    """Whether Lanczos on ``K`` can stop when ``λ_min`` comes from shift-invert: ``λ_max``
    converged (residual ``≤ tol·λ_max``), the ``k`` largest Ritz values moved by at most
    ``√tol`` relatively in the last pass (the plot's and the report's top-k; they only grow,
    by interlacing), and the effective rank's quadrature moved by at most 1 % of its standard
    error (its Hutchinson sampling error, which more passes do not reduce). The passes that
    the bottom end alone needed are skipped: on the 8,000-example NTK, 10 passes instead of 16.

    Returns ``(settled, (top Ritz values, effective rank))`` for the next call.
    """
    top = theta[::-1][: min(k, theta.size)].copy()
    erank, error = _effective_rank_estimate(theta, s[: r0.shape[0]], r0)
    lmax = float(theta[-1])
    settled = (
        previous is not None
        and lmax_residual <= tol * abs(lmax)
        and previous[0].size == top.size
        and bool(np.all(np.abs(top - previous[0]) <= math.sqrt(tol) * np.abs(top)))
        and abs(erank - previous[1]) <= 0.01 * error
    )
    return settled, (top, erank)


def _effective_rank_estimate(
    theta: np.ndarray, first: np.ndarray, r0: np.ndarray
) -> tuple[float, float]:
    """``exp(log t − Σλ log λ / t)`` from the block Gauss quadrature of each probe.

    ``t = Σ_{λ>0} λ`` and ``Σ λ log λ`` are estimated with the same probes (errors partly
    cancel); the error is the spread of the per-probe values over ``√probes``.
    """
    # Gauss weights of z_iᵀ g(K) z_i = Σ_j g(θ_j) w_ij, with z = Q0 R0: (R0ᵀ S[:b, j])_i².
    weights = np.square(r0.T @ first)
    pos = np.where(theta > 0, theta, 0.0)
    ent = np.where(theta > 0, pos * np.log(np.where(theta > 0, theta, 1.0)), 0.0)
    t_i, h_i = weights @ pos, weights @ ent
    t, h = t_i.mean(), h_i.mean()
    if t <= 0:
        return 0.0, 0.0
    rank = float(np.exp(math.log(t) - h / t))
    # delta method: d log(rank) = (1/t + h/t²) dt − dh/t
    g = (1 / t + h / t**2) * (t_i - t) - (h_i - h) / t
    spread = float(np.std(g, ddof=1) / math.sqrt(len(g))) if len(g) > 1 else float("inf")
    return rank, rank * spread
