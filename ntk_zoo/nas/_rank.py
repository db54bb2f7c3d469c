"""Rank correlations between a proxy's scores and accuracies: Kendall's τ-b and Spearman's ρ."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def _pair(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(
            f"Rank correlation needs two equally long arrays, got {a.size} and {b.size}."
        )
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("Rank correlation of arrays holding NaN is undefined; drop those entries.")
    return a, b


def kendall_tau(a: ArrayLike, b: ArrayLike) -> float:
    """Kendall's τ-b of two equally long sequences, ties accounted for.

    ``τ_b = (C - D) / sqrt((P - T_a) (P - T_b))`` where, over the ``P = n(n-1)/2`` pairs, ``C``
    counts concordant pairs, ``D`` discordant ones, and ``T_a`` (``T_b``) the pairs tied in
    ``a`` (``b``). ``±inf`` entries rank as usual; NaN entries are an error. ``nan`` when either
    sequence is constant (as ``scipy.stats.kendalltau``). Time ``O(n²)``, memory ``O(n)``.

    Example:
      >>> kendall_tau([1, 2, 3, 4], [1, 3, 2, 4])  # one discordant pair out of six
      0.666...
      >>> kendall_tau([1, 1, 2], [1, 2, 3])  # a tie in the first sequence
      0.816...

    Reference: M. G. Kendall, "The treatment of ties in ranking problems", Biometrika, 1945.
    """
    a, b = _pair(a, b)
    concordance = 0.0
    untied_a = untied_b = 0
    for i in range(a.size - 1):  # one row of pairs at a time: memory stays O(n)
        # Comparisons, not differences: inf - inf is NaN.
        sa = np.greater(a[i + 1 :], a[i]).astype(np.int8) - np.less(a[i + 1 :], a[i])
        sb = np.greater(b[i + 1 :], b[i]).astype(np.int8) - np.less(b[i + 1 :], b[i])
        concordance += float(np.sum(sa * sb))
        untied_a += int(np.count_nonzero(sa))
        untied_b += int(np.count_nonzero(sb))
    if untied_a == 0 or untied_b == 0:
        return float("nan")
    return concordance / float(np.sqrt(float(untied_a) * float(untied_b)))


def average_ranks(a: ArrayLike) -> np.ndarray:
    """Ranks ``1..n`` of ``a`` in increasing order; tied entries share their average rank.

    Example:
      >>> average_ranks([10, 30, 20, 30]).tolist()
      [1.0, 3.5, 2.0, 3.5]
    """
    a = np.asarray(a, np.float64).ravel()
    order = np.argsort(a, kind="stable")
    sorted_a = a[order]
    # Start of each run of equal values in sorted order; the run's ranks are start+1 .. end.
    starts = np.flatnonzero(np.r_[True, sorted_a[1:] != sorted_a[:-1]])
    ends = np.r_[starts[1:], a.size]
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(a.size)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def spearman_rho(a: ArrayLike, b: ArrayLike) -> float:
    """Spearman's ρ: the Pearson correlation of the average ranks of ``a`` and ``b``.

    Ties share their average rank (as ``scipy.stats.spearmanr``); ``nan`` when either sequence
    is constant.

    Example:
      >>> round(spearman_rho([1, 2, 3, 4], [1, 3, 2, 4]), 6)
      0.8
      >>> round(spearman_rho([3, 2, 1], [1, 2, 3]), 6)
      -1.0

    Reference: C. Spearman, "The proof and measurement of association between two things",
    American Journal of Psychology, 1904.
    """
    a, b = _pair(a, b)
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    norm = float(np.sqrt(np.sum(ra * ra) * np.sum(rb * rb)))
    return float(np.sum(ra * rb)) / norm if norm > 0 else float("nan")
