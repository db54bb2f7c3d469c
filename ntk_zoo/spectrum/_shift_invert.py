"""λ_min of a kernel on disk by shift-invert: an out-of-core Cholesky of ``K + δI``, then block
Lanczos on ``(K + δI)⁻¹`` with streamed triangular solves.

Lanczos on ``K`` itself finds the bottom of an NTK spectrum slowly: the small eigenvalues are
clustered near zero, relative to ``λ_max``. Inverted they are the largest, as far apart as
``λ₂/λ₁`` says, so block Lanczos on ``(K + δI)⁻¹`` converges to ``1/(λ_min + δ)`` in a few
steps; where even ``λ₂/λ₁`` is ``1 + 1e-3``, a second shift just below the first estimate
separates them (:func:`shift_invert_lambda_min`).

The factor lives in a temporary file of lower-triangular tiles (``T = ⌈N/t⌉`` tile rows, tile
``(i, k)`` for ``k ≤ i``, tile rows stored one after another), float64 throughout:

1. *fill*: one pass over the kernel's rows writes the tiles of ``(K + Kᵀ)/2`` (each row tile
   read once; its columns go to the tiles left of the diagonal as they are and, transposed, to
   the tiles below it, which a later row tile completes);
2. *factor*: left-looking, tile column by tile column, in place: tile ``(i, j)`` less
   ``Σ_{k<j} L_ik L_jkᵀ`` (reading tile row ``i`` up to column ``j``), then ``cholesky`` on the
   diagonal and a triangular solve below it. Memory: three ``t × N`` panels and a tile.
   ``N³/3`` flops, and ``N³/(6t)`` float64 reads of the factor file (mostly the page cache);
3. *solve*: ``(K + δI)⁻¹ X = L⁻ᵀ L⁻¹ X``, a forward sweep down the tile rows and a backward
   sweep up them (the factor file read twice per application, ``2N²·b`` flops).

``δ`` starts at 0. A float32 kernel rounded from a PSD one can be slightly indefinite: when a
diagonal tile's Schur complement has a pivot ``≤ 0`` the factorisation restarts with
``δ ← max(4δ, N·eps·max K_ii)``. Growing by 4 keeps ``λ_min + δ`` within ``(0, ¾δ]`` (``K + δI``
positive definite certifies ``λ_min > −δ``, the failure at ``δ/4`` that ``λ_min ≲ −δ/4``), so
the bottom of the shifted spectrum stays separated; the failing tile's own least eigenvalue is
no guide: the Schur complements of an ill-conditioned ``K`` amplify ``|λ_min|`` by orders of
magnitude. Each restart costs the work up to the failing tile again.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from typing import Any

import numpy as np

from ntk_zoo.spectrum._pages import map_pages
from ntk_zoo.spectrum._threads import all_threads

SHIFT_INVERT_FLOPS = 1e13  # N³/3 above which "auto" keeps Lanczos (N ≈ 31,000: minutes of BLAS)
MAX_SHIFTS = 24  # restarts with a larger δ before giving up: 4²⁴·N·eps·max K_ii ≈ N·1e-1·max K_ii


class TiledFactor:
    """The lower triangle of an ``(N, N)`` float64 matrix, tile by tile, in a file.

    Tiles are ``t = examples·o`` rows square (the last tile row shorter); single tiles are read
    and written through ``os.preadv``/``os.pwrite``, tile rows mapped read-only for as long as
    one product needs them (``_pages.py``), so the factor never stays in this process.
    """

    def __init__(self, size: int, tile: int, directory: str):
        self.size, self.t = size, tile
        self.count = -(-size // tile)
        self.nbytes = 8 * self._row_offset(self.count)
        fd, self.path = tempfile.mkstemp(prefix=".ntk_zoo-factor-", suffix=".f64", dir=directory)
        self.fd = fd
        os.ftruncate(fd, self.nbytes)

    def close(self) -> None:
        os.close(self.fd)
        os.unlink(self.path)

    def rows(self, i: int) -> int:
        return min(self.t, self.size - i * self.t)

    def span(self, i: int) -> slice:
        return slice(i * self.t, i * self.t + self.rows(i))

    def _row_offset(self, i: int) -> int:
        """Float64 entries before tile row ``i`` (every earlier tile row is full)."""
        return self.t * self.t * i * (i + 1) // 2

    def _offset(self, i: int, k: int) -> int:
        return 8 * (self._row_offset(i) + k * self.rows(i) * self.t)

    def read(self, i: int, k: int) -> np.ndarray:
        """Tile ``(i, k)``, ``k ≤ i``."""
        return self._pread((self.rows(i), self.rows(k)), self._offset(i, k))

    def mapped_left(self, i: int, upto: int) -> np.ndarray:
        """Tiles ``(i, 0 … upto−1)`` as a read-only ``(upto, rows(i), t)`` view of the file's
        pages (no copy; unmapped when the view goes, see ``_pages.py``)."""
        return map_pages(self.fd, self._offset(i, 0), (upto, self.rows(i), self.t), np.float64)

    def write(self, i: int, k: int, tile: np.ndarray) -> None:
        view = memoryview(np.ascontiguousarray(tile, np.float64)).cast("B")
        offset, done = self._offset(i, k), 0
        while done < len(view):
            done += os.pwrite(self.fd, view[done:], offset + done)

    def _pread(self, shape: tuple[int, ...], offset: int) -> np.ndarray:
        out = np.empty(shape)
        got = os.preadv(self.fd, [memoryview(out).cast("B")], offset)
        if got != out.nbytes:
            raise OSError(f"{self.path}: short read ({got} of {out.nbytes} bytes).")
        return out


def tile_examples(stream: Any, memory_budget: int) -> int:
    """Examples per tile: three float64 panels of ``t × N`` within ``memory_budget``."""
    return max(1, min(stream.n, int(memory_budget) // (3 * 8 * stream.size * stream.o)))


def fill(factor: TiledFactor, stream: Any, examples: int) -> None:
    """Write the tiles of ``(K + Kᵀ)/2``: one pass over the kernel's rows."""
    for i in range(factor.count):
        start = i * examples
        rows = stream._read(start, min(start + examples, stream.n))  # (rows(i), N)
        for k in range(factor.count):
            block = rows[:, factor.span(k)]
            if k < i:  # tile (i, k) holds K[k, i]ᵀ/2 from row tile k
                factor.write(i, k, factor.read(i, k) + block / 2)
            elif k == i:
                factor.write(i, i, (block + block.T) / 2)
            else:
                factor.write(k, i, block.T / 2)


def factorize(factor: TiledFactor, shift: float) -> tuple[int, float] | None:
    """``L Lᵀ = A + shift·I`` in place; ``None``, or the failing tile and its least eigenvalue."""
    from scipy.linalg import LinAlgError, cholesky, solve_triangular

    for j in range(factor.count):
        panel = _panel(factor, j, j) if j else None  # L[J, :j·t]
        diagonal = None
        for i in range(j, factor.count):
            a = factor.read(i, j)
            if j:
                other = panel if i == j else _panel(factor, i, j)
                with all_threads():
                    a -= other @ panel.T
            if i == j:
                a[np.diag_indices_from(a)] += shift
                try:
                    diagonal = cholesky(a, lower=True, check_finite=False)
                except LinAlgError:
                    return j, float(np.linalg.eigvalsh(a)[0])
                if not np.all(np.isfinite(diagonal)):
                    return j, float(np.linalg.eigvalsh(a)[0])
                factor.write(j, j, diagonal)
            else:
                below = solve_triangular(diagonal, a.T, lower=True, check_finite=False)
                factor.write(i, j, below.T)
    return None


def _panel(factor: TiledFactor, i: int, upto: int) -> np.ndarray:
    """``L[I, :upto·t]`` as one matrix: one BLAS product instead of ``upto`` small ones (which
    OpenBLAS's threads make slow on small tiles)."""
    tiles = factor.mapped_left(i, upto)
    return tiles.transpose(1, 0, 2).reshape(factor.rows(i), upto * factor.t)  # (a copy)


def solve(factor: TiledFactor, x: np.ndarray) -> np.ndarray:
    """``(L Lᵀ)⁻¹ x`` for ``x`` of shape ``(N, b)``: forward then backward over the tile rows.

    Each tile row's tiles are multiplied where they were read (a stack of ``t × t`` products),
    not first copied into a ``t × i·t`` panel: the copy was a third of a solve's memory traffic.
    """
    from scipy.linalg import solve_triangular

    z = np.array(x, np.float64)
    b, t = z.shape[1], factor.t
    for i in range(factor.count):
        r = factor.span(i)
        if i:
            tiles = factor.mapped_left(i, i)  # (i, rows, t)
            z[r] -= np.matmul(tiles, z[: r.start].reshape(i, t, b)).sum(axis=0)
            del tiles
        z[r] = solve_triangular(factor.read(i, i), z[r], lower=True, check_finite=False)
    for i in reversed(range(factor.count)):
        r = factor.span(i)
        z[r] = solve_triangular(factor.read(i, i), z[r], lower=True, trans="T", check_finite=False)
        if i:
            tiles = factor.mapped_left(i, i)
            z[: r.start] -= np.matmul(tiles.transpose(0, 2, 1), z[r]).reshape(i * t, b)
            del tiles
    return z


def factor_directory(kernel: Any, directory: str | os.PathLike | None) -> str:
    """Where the factor goes: ``directory``, else beside the kernel's file, else the temp dir."""
    if directory is not None:
        return os.fspath(directory)
    name = getattr(kernel, "filename", None)
    if name is not None and os.access(os.path.dirname(os.path.abspath(name)), os.W_OK):
        return os.path.dirname(os.path.abspath(name))
    return tempfile.gettempdir()


def factor_bytes(size: int, tile: int) -> int:
    count = -(-size // tile)
    return 8 * tile * tile * count * (count + 1) // 2


def can_shift_invert(size: int, tile: int, directory: str) -> str | None:
    """Why the shift-invert cannot run here (``None`` when it can)."""
    need = factor_bytes(size, tile)
    free = shutil.disk_usage(directory).free
    if need > free:
        return f"the factor needs {need >> 20} MiB in {directory}, {free >> 20} MiB are free"
    return None


def shift_invert_lambda_min(
    stream: Any,
    *,
    memory_budget: int,
    directory: str,
    diagonal: np.ndarray | None = None,
    tol: float = 1e-7,
    width: int = 8,
    max_steps: int = 30,
    key: int = 0,
) -> dict[str, Any]:
    """``λ_min`` of ``(K + Kᵀ)/2`` by block Lanczos on ``(K + δI)⁻¹`` (see the module).

    When the bottom of the spectrum is so clustered that ``max_steps`` do not converge (NTKs:
    neighbouring eigenvalues ``1e-3`` apart, relatively), the estimate ``λ̂`` and its residual
    ``r`` give a second shift: ``K − (λ̂ − r)I`` is factorised (positive definite unless
    ``λ_min < λ̂ − r``; then ``λ̂ − 4r`` is tried, else the first estimate stands), and
    ``λ_min − (λ̂ − r)`` is small against the next eigenvalue's distance, so Lanczos converges
    in a few steps. One more factorisation, a few more solves.

    Returns ``lambda_min`` (the Rayleigh quotient ``yᵀ K y`` of the Ritz vector), its residual
    ``‖K y − λ y‖`` against the kernel (one more pass over the file), ``shift`` (``δ`` of the
    factor that gave it: ``λ_min > −δ``), ``solves`` (applications of the inverse),
    ``factorizations``, ``converged``, ``tile`` (rows), ``factor_bytes`` and ``seconds`` of each
    phase.
    """
    from ntk_zoo.spectrum._streamed import RowStream

    size = stream.size
    examples = tile_examples(stream, memory_budget)
    stream = RowStream(stream.array, memory_budget, rows=examples)  # a tile row a read
    factor = TiledFactor(size, examples * stream.o, directory)
    seconds = {"fill": 0.0, "factor": 0.0, "solves": 0.0, "lanczos": 0.0, "residual": 0.0}
    counts = {"factorizations": 0, "solves": 0}
    rng = np.random.default_rng(key)
    width = max(1, min(width, size))
    cap = min(size, max(width, max_steps * width), max(width, memory_budget // (16 * size)))

    def factorize_at(shift: float) -> tuple[int, float] | None:
        start = time.perf_counter()
        fill(factor, stream, examples)
        seconds["fill"] += time.perf_counter() - start
        start = time.perf_counter()
        failed = factorize(factor, shift)
        seconds["factor"] += time.perf_counter() - start
        counts["factorizations"] += 1
        return failed

    def lowest(shift: float, guess: np.ndarray | None) -> dict[str, Any]:
        start = time.perf_counter()
        y, converged, solves = _inverse_lanczos(factor, tol, cap, width, rng, guess, seconds)
        counts["solves"] += solves
        seconds["lanczos"] += time.perf_counter() - start
        start = time.perf_counter()
        ky = stream.matmat(y[:, None])[:, 0]
        lam = float(y @ ky)
        seconds["residual"] += time.perf_counter() - start
        return dict(
            lambda_min=lam,
            residual=float(np.linalg.norm(ky - lam * y)),
            shift=shift,
            converged=converged,
            y=y,
        )

    try:
        floor = (
            size
            * np.finfo(np.float64).eps
            * float(np.abs(stream.diagonal() if diagonal is None else diagonal).max())
        )
        shift = 0.0
        while (failed := factorize_at(shift)) is not None:
            if counts["factorizations"] > MAX_SHIFTS:
                raise np.linalg.LinAlgError(
                    f"K + {shift:.3g}·I is still not positive definite after "
                    f"{counts['factorizations']} shifts (tile {failed[0]}: least Schur "
                    f"eigenvalue {failed[1]:.3g}); the kernel is far from PSD: use "
                    "lambda_min='lanczos'."
                )
            shift = max(4 * shift, floor)
        best = lowest(shift, None)
        for spread in (1, 4):
            if best["converged"]:
                break
            closer = spread * best["residual"] - best["lambda_min"]  # −(λ̂ − spread·r)
            if factorize_at(closer) is None:
                found = lowest(closer, best["y"])
                if found["residual"] <= best["residual"]:
                    best = found
                break
    finally:
        factor.close()
    del best["y"]
    return dict(
        best,
        solves=counts["solves"],
        factorizations=counts["factorizations"],
        tile=factor.t,
        factor_bytes=factor.nbytes,
        seconds=seconds,
    )


def _inverse_lanczos(
    factor: TiledFactor,
    tol: float,
    cap: int,
    width: int,
    rng: np.random.Generator,
    guess: np.ndarray | None,
    seconds: dict[str, float],
) -> tuple[np.ndarray, bool, int]:
    """The top eigenvector of ``(L Lᵀ)⁻¹`` by block Lanczos (full reorthogonalisation), then
    one inverse iteration: ``(y, converged, solves)``."""
    from ntk_zoo.spectrum._streamed import _orthonormal_block

    size = factor.size
    basis = np.empty((cap, size))
    images = np.empty((cap, size))
    projected = np.zeros((cap, cap))
    start = rng.standard_normal((size, width))
    if guess is not None:
        start[:, 0] = guess
    q = np.linalg.qr(start)[0].T
    m, solves, previous = 0, 0, 0.0
    while True:
        b = q.shape[0]
        basis[m : m + b] = q
        tick = time.perf_counter()
        images[m : m + b] = solve(factor, q.T).T
        seconds["solves"] += time.perf_counter() - tick
        m += b
        solves += 1
        fresh = basis[:m] @ images[m - b : m].T  # the new columns of Qᵀ M Q
        projected[:m, m - b : m] = fresh
        projected[m - b : m, :m] = fresh.T
        values, vectors = np.linalg.eigh(projected[:m, :m])
        theta, s = float(values[-1]), vectors[:, -1]
        resid = float(np.linalg.norm(s @ images[:m] - theta * (s @ basis[:m])))
        # Converged: the Ritz value is within resid²/gap of 1/(λ_min + δ) (the gap to the next
        # Ritz value standing for the next eigenvalue's), its vector within resid; or it no
        # longer moves at float64 resolution (the solves' rounding, about eps·κ, floors the
        # residual of an ill-conditioned K).
        gap = theta - float(values[-2]) if m > 1 else math.inf
        converged = (
            resid <= tol * theta
            or resid**2 <= tol * theta * gap
            or (solves > 2 and theta - previous <= 8e-16 * theta)
            or m == size
        )
        if converged or m + 1 > cap:
            break
        previous = theta
        q = _orthonormal_block(images[m - b : m], basis[:m], theta, rng)[: min(width, cap - m)]
    # One inverse iteration from the Ritz vector: its components along eigenvalues λ_j shrink
    # by (λ_min + δ)/(λ_j + δ), which is what the residual against K weighs most.
    y = (s @ images[:m]) / theta
    del basis, images
    tick = time.perf_counter()
    y = solve(factor, y[:, None])[:, 0]
    seconds["solves"] += time.perf_counter() - tick
    return y / np.linalg.norm(y), bool(converged), solves + 1
