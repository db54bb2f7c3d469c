"""The order of each einsum's pairwise contractions, chosen by roofline cost for the shapes.

opt_einsum orders contractions by FLOPs alone; here a step costs its estimated seconds on the
machine's :class:`ntk_zoo.core.CostTable`: it also pays for the bytes it reads and writes, which
steers away from paths through huge intermediates (e.g. a Gram matrix of all token pairs of all
example pairs), and a contraction with a small output tile per batch element runs at the small
einsum rate, which steers towards paths that are a few large matrix products.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterator, Sequence

import opt_einsum

from ntk_zoo.core import CostTable, active_table, contraction_kind

Labels = tuple[int, ...]
_EXHAUSTIVE = 6  # operands up to which every pairwise order is tried


def _step(a: Labels, b: Labels, keep: set[int], sizes: dict[int, int], shared: bool = False):
    """Contracting ``a`` with ``b``: the result's labels, its FLOPs and the values it moves
    (operands read and laid out for the product, result written). ``shared``: ``a`` and ``b``
    are one array under two labellings (a factor's Gram with itself when ``x2=None``)."""
    result = tuple(label for label in dict.fromkeys(a + b) if label in keep)
    flops = 2.0 * math.prod(sizes[label] for label in set(a) | set(b))
    # Both operands are read, copied into the (batch, m, k) layout a matrix product takes (read
    # and written once more), and the result is written. One array on both sides is read and
    # laid out once: XLA computes the same transpose of the same array once, and ``A Aᵀ`` takes
    # no further copy (``_contractor.pair_product``; Jacobian contraction's estimate reads its
    # Jacobian once for the same product).
    moved = sum(3 * math.prod(sizes[label] for label in x) for x in ((a,) if shared else (a, b)))
    moved += math.prod(sizes[label] for label in result)
    return result, flops, moved


def step_kind(a: Labels, b: Labels, result: Labels, sizes: dict) -> str:
    """The kind of contracting ``a`` with ``b`` into ``result`` (:func:`core.contraction_kind` of
    its per-batch-element ``m×k`` by ``k×n`` shape)."""
    size = lambda labels: math.prod(sizes[label] for label in labels)
    sa, sb, kept = set(a), set(b), set(result)
    k = size((sa & sb) - kept)
    return contraction_kind(size((sa - sb) & kept), k, size((sb - sa) & kept))


def step_seconds(
    a: Labels,
    b: Labels,
    keep: set[int],
    sizes: dict,
    itemsize: int,
    table: CostTable,
    shared: bool = False,
) -> tuple[Labels, float]:
    """Contracting ``a`` with ``b``: the result's labels and the step's estimated seconds
    (``shared``: one array on both sides, see :func:`_step`)."""
    result, flops, moved = _step(a, b, keep, sizes, shared)
    kind = step_kind(a, b, result, sizes)
    return result, table.seconds(flops, moved * itemsize, kind)


def timed_steps(
    path: Sequence[tuple[int, ...]],
    subs: Sequence[Labels],
    out: Labels,
    sizes: dict,
    itemsize: int,
    table: CostTable | None = None,
    shared: Callable[[int, int], bool] | None = None,
) -> Iterator[tuple[int, int, float]]:
    """Each pairwise step of ``path``: (position of a, position of b, estimated seconds).

    ``shared(i, j)``, asked before each step, says whether the operands now at ``i`` and ``j``
    are one array (read and laid out once, see :func:`_step`); a caller that tracks what each
    operand holds updates its own lists after each yielded step, as the path merges them."""
    table = active_table() if table is None else table
    ops = [tuple(s) for s in subs]
    for step in path:
        if len(step) == 1:
            continue
        i, j = sorted(step)
        rest = ops[:i] + ops[i + 1 : j] + ops[j + 1 :]
        keep = set(out).union(*rest) if rest else set(out)
        one = shared is not None and shared(i, j)
        result, seconds = step_seconds(ops[i], ops[j], keep, sizes, itemsize, table, one)
        yield i, j, seconds
        ops = [*rest, result]


def plan(
    subs: tuple[Labels, ...],
    shapes: tuple[tuple[int, ...], ...],
    out: Labels,
    itemsize: int,
    table: CostTable | None = None,
) -> tuple[list[tuple[int, int]], float]:
    """The cheapest contraction path (opt_einsum's format) and its estimated seconds on
    ``table`` (default: the active table of the default backend)."""
    return _plan(subs, shapes, out, itemsize, active_table() if table is None else table)


@functools.lru_cache(maxsize=4096)
def _plan(
    subs: tuple[Labels, ...],
    shapes: tuple[tuple[int, ...], ...],
    out: Labels,
    itemsize: int,
    table: CostTable,
) -> tuple[list[tuple[int, int]], float]:
    sizes = {label: n for s, shape in zip(subs, shapes) for label, n in zip(s, shape)}
    if len(subs) == 1:
        return [(0,)], 0.0
    if len(subs) > _EXHAUSTIVE:
        sym = lambda labels: "".join(opt_einsum.get_symbol(i) for i in labels)
        eq = ",".join(sym(s) for s in subs) + "->" + sym(out)
        path, _ = opt_einsum.contract_path(eq, *shapes, shapes=True, optimize="greedy")
        total = sum(t for _, _, t in timed_steps(path, subs, out, sizes, itemsize, table))
        return list(path), total
    best: list = [None, math.inf]

    def search(ops: list[Labels], path: list, total: float) -> None:
        if total >= best[1]:
            return
        if len(ops) == 1:
            best[0], best[1] = list(path), total
            return
        for i, j in itertools.combinations(range(len(ops)), 2):
            rest = ops[:i] + ops[i + 1 : j] + ops[j + 1 :]
            keep = set(out).union(*rest) if rest else set(out)
            result, seconds = step_seconds(ops[i], ops[j], keep, sizes, itemsize, table)
            search([*rest, result], [*path, (i, j)], total + seconds)

    search([tuple(s) for s in subs], [], 0.0)
    return best[0], best[1]
