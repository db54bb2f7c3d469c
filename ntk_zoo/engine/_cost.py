"""The cost model behind ``method="auto"``: every registered method's own estimate, in seconds.

Costs come from shapes and from the traced program of ``f`` (:func:`ntk_zoo.core.count`),
never from XLA's ``cost_analysis()``, which is wrong on CPU and GPU. Each method is split into
phases of a kind (large matmuls, small batched einsums, memory-bound passes), and each phase
costs ``steps · overhead + max(flops / rate[kind], bytes / bandwidth)`` seconds with the rates
of the machine's :class:`ntk_zoo.core.CostTable` (measured by :func:`ntk_zoo.calibrate`); each
method declares its phases with its ``NtkMethod.cost`` (see :class:`ntk_zoo.Method`).
"""

from __future__ import annotations

from typing import Any

import jax

from ntk_zoo.core import CostTable, Problem, active_table, count
from ntk_zoo.engine._method import Method
from ntk_zoo.engine._registry import METHODS


class Choice(tuple):
    """What ``KernelFn.choose`` returns: the pair ``(method, costs)``, plus ``.table``.

    Unpacks as ``method, costs = kernel_fn.choose(...)``; ``costs`` maps every registered
    method to its estimated seconds; ``table`` is the :class:`ntk_zoo.core.CostTable` they were
    estimated on (``table.source`` says whether it is the user's cached calibration, the row
    shipped with the package, or the default).

    ``measured`` says whether the pick was timed (``source="measured"``: now; ``"wisdom"``: read
    back from an earlier measurement) or only estimated (``source="estimate"``); ``times`` holds
    the measured seconds per call of each candidate timed, ``skipped`` the candidates dropped
    for their memory, with why, ``excluded`` the methods that were not candidates, with why (see
    :class:`ntk_zoo.AutoOptions`).
    """

    method: Method
    costs: dict[str, float]
    table: CostTable
    replay: Any = None  # set by cheapest(replay=True); not part of the pair
    measured: bool = False
    source: str = "estimate"
    times: dict[str, float] = {}  # noqa: RUF012 (replaced per instance, never mutated)
    skipped: dict[str, str] = {}  # noqa: RUF012
    excluded: dict[str, str] = {}  # noqa: RUF012

    def __new__(cls, method: Method, costs: dict[str, float], table: CostTable) -> Choice:
        choice = super().__new__(cls, (method, costs))
        choice.method, choice.costs, choice.table = method, costs, table
        return choice

    def __getnewargs__(self) -> tuple[Any, ...]:
        return (self.method, self.costs, self.table)

    def __repr__(self) -> str:
        timed = f", times={self.times!r}" if self.measured else ""
        return (
            f"Choice(method={self.method!r}, costs={self.costs!r}, table={self.table.source!r}, "
            f"source={self.source!r}{timed})"
        )


def estimate(
    problem: Problem,
    table: CostTable | None = None,
    replays: dict | None = None,
    sum_params: bool = False,
) -> dict[str, float]:
    """Every method's estimated seconds on ``table`` (default: the active table of the default
    backend), in the registry's order. With ``replays`` (a dict), each method whose estimate
    traces the method itself (``NtkMethod.traced_cost``) adds its ``replay`` under its name:
    its ``compute(problem, sum_params)``."""
    if any(0 in leaf.shape for leaf in jax.tree.leaves((problem.fx1, problem.fx2))):
        return dict.fromkeys((m.value for m in METHODS), 0.0)  # an empty kernel costs nothing
    counts = count(problem, table)
    costs = {}
    for method, spec in METHODS.items():
        if replays is not None and spec.traced_cost is not None:
            costs[method.value], replays[method.value] = spec.traced_cost(
                problem, counts, sum_params
            )
        else:
            costs[method.value] = spec.cost(problem, counts)
    return costs


# On a tie, structured derivatives win: its estimate equals Jacobian contraction's when its
# planner takes every leaf's Jacobian product (the same arithmetic), which it runs through each
# primitive's own transpose rather than one reverse-mode pass over the whole program (measured
# 1.2-1.4x faster on the zoo's WideResNets with tied estimates, BENCHMARKS.md).
TIE_ORDER = (
    Method.STRUCTURED_DERIVATIVES,
    Method.JACOBIAN_CONTRACTION,
    Method.NTK_VECTOR_PRODUCTS,
)
TIE = 1e-9  # relative: estimates this close are equal


def cheapest(
    problem: Problem,
    table: CostTable | None = None,
    replay: bool = False,
    sum_params: bool = False,
) -> Choice:
    """The method with the lowest estimated cost (ties: :data:`TIE_ORDER`), every method's
    estimate, and the table. With ``replay``, ``choice.replay`` is, when the picked method's
    estimate traced the method itself, a function returning its ``compute(problem, sum_params)``
    result from that trace (``NtkMethod.traced_cost``), else ``None``: ``auto`` then traces what
    it runs once."""
    table = active_table() if table is None else table
    replays: dict[str, Any] | None = {} if replay else None
    costs = estimate(problem, table, replays, sum_params)
    least = min(costs.values())
    tied = [Method(m) for m, c in costs.items() if c <= least * (1 + TIE)]
    rank = lambda m: TIE_ORDER.index(m) if m in TIE_ORDER else len(TIE_ORDER)
    choice = Choice(min(tied, key=rank), costs, table)
    choice.replay = (replays or {}).get(choice.method.value)
    return choice
