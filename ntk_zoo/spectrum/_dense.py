"""Dense eigen-decomposition of a kernel matrix."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Spectrum(NamedTuple):
    """Eigenvalues (descending) and the conditioning figures derived from them.

    ``condition_number`` is ``lambda_max / lambda_min`` and ``inf`` when ``lambda_min <= 0``;
    ``n_nonpositive`` counts eigenvalues ``<= 0`` (zero or negative from rounding), reported
    rather than hidden by a fudge term. ``effective_rank`` is ``exp`` of the entropy of the
    normalised positive eigenvalues (Roy & Vetterli, 2007).
    """

    eigenvalues: np.ndarray
    trace: float
    lambda_max: float
    lambda_min: float
    condition_number: float
    effective_rank: float
    n_nonpositive: int


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


def spectrum(kernel: np.ndarray, *, float64: bool = True) -> Spectrum:
    """The spectrum of a symmetric kernel (``Θ(x, x)``), by ``numpy.linalg.eigvalsh``.

    Example:
      >>> import numpy as np
      >>> s = spectrum(np.diag([4.0, 1.0, 2.0]))
      >>> s.eigenvalues.tolist(), s.condition_number
      ([4.0, 2.0, 1.0], 4.0)
    """
    k = flatten_kernel(kernel)
    if k.shape[0] != k.shape[1]:
        raise ValueError(f"A spectrum needs a square kernel Θ(x, x); got shape {k.shape}.")
    k = k.astype(np.float64 if float64 else k.dtype)
    eig = np.linalg.eigvalsh((k + k.T) / 2)[::-1]
    lmax, lmin = float(eig[0]), float(eig[-1])
    positive = eig[eig > 0]
    p = positive / positive.sum() if positive.size else positive
    return Spectrum(
        eigenvalues=eig,
        trace=float(np.trace(k)),
        lambda_max=lmax,
        lambda_min=lmin,
        condition_number=lmax / lmin if lmin > 0 else float("inf"),
        effective_rank=float(np.exp(-(p * np.log(p)).sum())) if p.size else 0.0,
        n_nonpositive=int((eig <= 0).sum()),
    )
