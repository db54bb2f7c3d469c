"""The contract between the NTK methods and the engine that dispatches to them."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from ntk_zoo.core._counts import Counts
from ntk_zoo.core._problem import Problem


class NtkMethod(NamedTuple):
    """One NTK algorithm as the engine's registry sees it.

    ``compute(problem, sum_params)`` returns, per output leaf of ``f``, the *unscaled* kernel
    (not yet divided by the traced axes' size) in the interleaved layout: a param-tree of each
    param leaf's contribution, or, when ``sum_params`` is true, optionally their sum already.
    ``cost(problem, counts)`` is its estimated time in seconds (``counts`` from :func:`count`;
    each phase through ``counts.phase(flops, values, kind)`` on the machine's
    :class:`CostTable`), used by ``method="auto"``.

    ``traced_cost(problem, counts, sum_params)``, optional, is ``(cost, replay)`` for a method
    whose estimate traces the method itself (structured derivatives count their einsums on their
    own trace): ``replay()`` returns ``compute(problem, sum_params)``'s result from that same
    trace, without tracing the method again, so that ``auto`` traces the method it picks once
    (and runs the same program as the method named).
    """

    name: str
    compute: Callable[[Problem, bool], list]
    cost: Callable[[Problem, Counts], float]
    traced_cost: Callable[[Problem, Counts, bool], tuple[float, Callable[[], list]]] | None = None
