"""The contractions of structured derivatives, and who carries them out: a contractor that runs
each einsum, or one that prices it (``auto``'s cost estimate traces the method with it).

Every contraction is an :class:`Einsum`: operands labelled by integers, the output's labels,
and per operand its side (``1``: computed from ``x1``, ``2``: from ``x2``, ``0``: from both).
The sides let the pricing tell the steps of one side (part of building the factors) from the
steps that combine both, and skip side 2's own steps when ``x2=None`` (they repeat side 1's,
and XLA computes them once).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ntk_zoo.core import CostTable, contraction_kind
from ntk_zoo.structured._plan import plan, timed_steps
from ntk_zoo.structured._structure import FactorCost

Labels = list[int]


class Einsum(NamedTuple):
    """One contraction: ``operands`` as ``(array, labels)`` pairs, the ``out`` labels, and
    per operand its side (``1``, ``2`` or ``0`` for both). ``mirror``, where given, says the
    result is symmetric: swapping the two sides (``x2=None``, a use paired with itself), i.e.
    each output label of side 1 with its side-2 twin (``mirror``'s pairs, the examples' first;
    labels shared by the sides stay), leaves the values unchanged, so only the example pairs
    ``n ≤ n'`` need computing (:func:`run_path`)."""

    operands: list[tuple[Any, Labels]]
    out: Labels
    sides: tuple[int, ...]
    mirror: tuple[tuple[int, int], ...] | None = None

    @property
    def subscripts(self) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(labels) for _, labels in self.operands)

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(a.shape) for a, _ in self.operands)

    def sizes(self) -> dict[int, int]:
        """Per label, its size."""
        return {label: n for a, labels in self.operands for label, n in zip(labels, a.shape)}

    def itemsize(self) -> int:
        return jnp.dtype(self.operands[0][0].dtype).itemsize


class Contractor(Protocol):
    """Carries out the einsums of structured derivatives (see the module docstring)."""

    def contract(self, einsum: Einsum) -> jax.Array:
        """The result of ``einsum`` (or an array of its shape)."""

    def factor(
        self,
        einsum: Einsum,
        formed: jax.Array | None,
        cost: FactorCost | None = None,
        d: jax.Array | None = None,
    ) -> jax.Array:
        """A use's Jacobian factor ``∂f/∂y · ∂y/∂w``: ``formed`` (by the primitive's own
        transpose, or the rule's own formulation) where given, else ``einsum`` (the einsum of
        the use's structure), which it equals either way. ``cost``: what the rule's formulation
        runs, where it says (:class:`FactorCost`); ``d``: the structure's dense block (one of
        ``einsum``'s operands)."""


def side_steps(
    path: Sequence[tuple[int, ...]],
    einsum: Einsum,
    itemsize: int,
    table: CostTable | None = None,
    same: bool = False,
) -> Iterator[tuple[set[int], float]]:
    """Each pairwise step of ``einsum`` on ``path``: the sides its result depends on, and its
    estimated seconds on ``table`` (default: the active one). With ``same`` (``x2=None``), a
    step that contracts a side-1 operand with side 2's copy of it (the same arrays, combined
    the same way: a factor's Gram with itself) reads and lays out that array once."""
    owners = [{x} if x else {1, 2} for x in einsum.sides]
    sources = [(id(a),) for a, _ in einsum.operands]  # the arrays each operand is computed from

    def shared(i: int, j: int) -> bool:  # side 1's operand and side 2's copy of it
        mirror = {frozenset(owners[i]), frozenset(owners[j])} == {ONE, TWO}
        return same and mirror and sources[i] == sources[j]

    subs, out, sizes = einsum.subscripts, tuple(einsum.out), einsum.sizes()
    for i, j, seconds in timed_steps(path, subs, out, sizes, itemsize, table, shared):
        merged = owners[i] | owners[j]
        drop = lambda xs, i=i, j=j: [*xs[:i], *xs[i + 1 : j], *xs[j + 1 :]]
        owners = [*drop(owners), merged]
        sources = [*drop(sources), tuple(sorted(sources[i] + sources[j]))]
        yield merged, seconds


ONE, TWO = frozenset({1}), frozenset({2})


# The kernel blocks (einsum outputs) up to which the running contractor lays out each pair's
# operands itself (:func:`run_path`); larger ones go to ``jnp.einsum`` whole, XLA choosing the
# layouts. Measured on the 2-core CPU (float32, one process, alternating, load 2-3): laying out
# made SD 1.13-1.3x faster on the conv and ViT cells with 8 logits (kernel blocks of 128² to
# 256²), but 1.12-1.19x slower on the conv with 100 logits (1600², cell 7), where the products
# are large enough that XLA's own canonical layouts run faster (cause not isolated: each einsum
# timed alone was not slower but one, by 1.4x). The lead's quiet re-check (2026-12-06, one
# process, LAYOUT_OUT against -1 alternating, medians): conv O=8 N=32 1.17x faster, ViT O=8
# N=16 even, ViT-S/16 N=16 1.05x faster, but WRN-16-4 N=16 1.06x and WRN-28-10 N=8 1.11x
# slower. That loss was not the block size but one product shape, XLA:CPU's slow batched A·Bᵀ
# with fewer rows on the left (the WRNs' 8×8 conv leaves), which ``pair_product`` now avoids by
# putting the wider operand left; with it the WRNs measure at least even (2026-12-06, under
# load, ``python -m benchmarks.layout_ab``; ARCHITECTURE.md), so the bound stays as it was.
LAYOUT_OUT = 2**18


# ``pair_product`` puts the right operand on the left where it has at least this many times the
# left's free values (rows). Measured (CPU time, load 5-8): 2-8x the rows made the batched A·Bᵀ
# 1.6-9x slower than swapped; near a tie the swap gains nothing and can cost a copy in the next
# product (on the conv cell, 256 against 288 rows: the swapped factor, ``[n, cin, kh, kw, o,
# cout]``, no longer has its free axes ``n, o`` leading for the Gram that follows, which copies
# it; 1.20x -> 1.17x against einsum, within the noise of that measurement).
SWAP_ROWS = 2


# A symmetric einsum (``Einsum.mirror``) is computed for the example pairs ``n ≤ n'`` only when
# its estimated time is at least PAIRS_MIN_S seconds (``_plan`` on the active cost table) and
# the pairs take at least PAIRS_MIN_SAVING of its steps' multiply-adds away (:func:`_pairs_pay`):
# the published sizes' dominant steps (issue 20), not the grid's small ones, nor einsums whose
# paired steps are a small part (ViT-S/16 at N=32: the gathers alone, 0.98x measured).
PAIRS_MIN_S = 0.02
PAIRS_MIN_SAVING = 0.1


def run_path(
    operands: list[tuple[Any, Labels]],
    out: Labels,
    path,
    mirror: tuple[tuple[int, int], ...] | None = None,
) -> jax.Array:
    """The einsum of ``operands`` into ``out``, pairwise along ``path`` (opt_einsum's format),
    each pair as one matrix product (:func:`pair_product`).

    With ``mirror`` (a symmetric result, :class:`Einsum`), the steps from the first one that
    involves an operand holding both sides' example labels ``n, n'`` run on the pairs
    ``n ≤ n'`` only, as one batch axis ``p`` (each operand gathered at its examples of the
    pairs), and the other half of the result is the mirror image of the computed one. The
    steps before it (each side's own, and the one that first combines the two sides) run
    whole. Exact: every computed value is the same sum; the pairs ``n > n'`` copy their
    mirrors."""
    ops = [(arr, list(labels)) for arr, labels in operands]
    pairs = None if mirror is None else _Pairs(ops, out, mirror)
    for step in path:
        if len(step) == 1:
            continue
        i, j = sorted(step)
        (a, la), (b, lb) = ops[i], ops[j]
        if pairs is not None and (pairs.active(la) or pairs.active(lb)):
            (a, la), (b, lb) = pairs.gather(a, la), pairs.gather(b, lb)
        ops = ops[:i] + ops[i + 1 : j] + ops[j + 1 :]
        keep = set(out).union(*(labels for _, labels in ops))
        if pairs is not None:
            keep.add(pairs.p)
        ops.append(pair_product(a, la, b, lb, keep))
    (arr, labels), *rest = ops
    assert not rest, "the path leaves more than one operand"
    if pairs is not None and pairs.p in labels:
        return pairs.scatter(arr, labels)
    return jnp.einsum(arr, labels, list(out), precision=lax.Precision.HIGHEST)


def _pairs_pay(einsum: Einsum, path) -> bool:
    """Whether running ``einsum`` on its example pairs (:func:`run_path`) takes at least
    ``PAIRS_MIN_SAVING`` of its steps' multiply-adds away (each step counted as the product of
    the sizes of its operands' labels)."""
    (n1, n2), *_ = einsum.mirror
    sizes = einsum.sizes()
    n = sizes[n1]
    p = object()  # the pairs' label
    sizes = {**sizes, p: n * (n + 1) // 2}
    ops = [list(labels) for labels in einsum.subscripts]
    whole = paired = 0
    for step in path:
        if len(step) == 1:
            continue
        i, j = sorted(step)
        la, lb = ops[i], ops[j]
        ops = ops[:i] + ops[i + 1 : j] + ops[j + 1 :]
        keep = set(einsum.out).union(*ops)
        labels = set(la) | set(lb)
        unpaired = {n1 if x is p else x for x in labels} | ({n2} if p in labels else set())
        whole += math.prod(sizes[x] for x in unpaired)
        if p in labels or any(n1 in x and n2 in x for x in (la, lb)):
            labels = {p if x in (n1, n2) else x for x in labels}
        paired += math.prod(sizes[x] for x in labels)
        ops.append([x for x in labels if x in keep or x is p])
    return paired <= (1 - PAIRS_MIN_SAVING) * whole


class _Pairs:
    """The example pairs ``n ≤ n'`` of a symmetric einsum (see :func:`run_path`)."""

    def __init__(self, ops: list, out: Labels, mirror: tuple[tuple[int, int], ...]):
        self.out = list(out)
        (self.n1, self.n2), *_ = mirror
        self.twin = {a: b for a, b in mirror} | {b: a for a, b in mirror}
        sizes = {x: k for arr, labels in ops for x, k in zip(labels, arr.shape)}
        self.n = sizes[self.n1]
        self.p = 1 + max(max(labels, default=0) for _, labels in ops)
        self.p = max(self.p, 1 + max(out))
        first, second = np.triu_indices(self.n)
        self.first, self.second = jnp.asarray(first), jnp.asarray(second)
        self.off = jnp.asarray(np.flatnonzero(first != second))

    def active(self, labels: Labels) -> bool:
        """Whether a step with this operand runs on the pairs."""
        return self.p in labels or (self.n1 in labels and self.n2 in labels)

    def gather(self, arr: jax.Array, labels: Labels) -> tuple[jax.Array, Labels]:
        """``arr`` at the pairs: its ``n`` / ``n'`` axes (either or both) become ``p``."""
        has1, has2 = self.n1 in labels, self.n2 in labels
        if self.p in labels or not (has1 or has2):
            return arr, list(labels)
        if has1 and has2:
            i, j = labels.index(self.n1), labels.index(self.n2)
            arr = jnp.moveaxis(arr, (i, j), (0, 1))[self.first, self.second]
            return arr, [self.p] + [x for x in labels if x not in (self.n1, self.n2)]
        label, index = (self.n1, self.first) if has1 else (self.n2, self.second)
        k = labels.index(label)
        return jnp.take(arr, index, axis=k), [self.p if x == label else x for x in labels]

    def scatter(self, arr: jax.Array, labels: Labels) -> jax.Array:
        """The whole result from its values at the pairs (``p`` first), mirrored."""
        rest = [x for x in self.out if x not in (self.n1, self.n2)]
        half = jnp.einsum(arr, labels, [self.p, *rest], precision=lax.Precision.HIGHEST)
        image = jnp.einsum(half, [self.p, *rest], [self.p, *(self.twin.get(x, x) for x in rest)])
        whole = jnp.zeros((self.n, self.n, *half.shape[1:]), half.dtype)
        whole = whole.at[self.first, self.second].set(half)
        whole = whole.at[self.second[self.off], self.first[self.off]].set(image[self.off])
        return jnp.einsum(whole, [self.n1, self.n2, *rest], self.out)


def pair_product(a: jax.Array, la: Labels, b: jax.Array, lb: Labels, keep: set[int]):
    """``a`` (labels ``la``) contracted with ``b`` (``lb``), keeping the labels in ``keep``:
    ``(array, labels)``, labels ordered as batch (in both, kept), then the own labels of the
    left operand (``b`` where it has ``SWAP_ROWS`` times ``a``'s free values, else ``a``), then
    the other's.

    Both operands are laid out as ``(batch, free, contracted)`` matrices, the contracted axes
    minor and in the same order on both sides, before one batched ``dot_general`` over their last
    axes (as Jacobian contraction does). Left to ``jnp.einsum``, a product over several
    contracted axes reaches XLA as a ``dot_general`` that XLA:CPU canonicalises to
    ``(m, k) × (k, n)``: the right operand is copied into a transposed layout, so a leaf's dense
    factor contracted with itself (``x2=None``) is copied twice (see ARCHITECTURE.md). Here the two
    sides' layouts are the same transpose of the same array, which XLA computes once, and the
    product ``A Aᵀ`` needs no further copy.

    The operand with many more free values (rows: ``SWAP_ROWS`` times the other's) goes on the
    left, whichever order the path gives: XLA:CPU runs a batched ``A Bᵀ`` (contracted axes minor
    on both sides) 1.6-9x slower when ``A`` has 2-8x fewer rows than ``B``
    (8 × (10 × 16384)·(80 × 16384)ᵀ: 24-29 ms against 6-7 ms swapped, CPU time, multi- or
    single-threaded), the last product of the WideResNets' conv leaves that are planned
    patch-Gram first (8×8 and 16×16, 4 on WRN-16-4, 15 on WRN-28-10). Swapping adds no
    copy to this product (the result's labels say the order), but the reordered result can
    need one in the next, hence the margin. The batch and contracted orders follow the left
    operand, which is also the larger (the two share those axes), so that where the orders
    differ the smaller one is transposed.
    Exact: the same sums, in another order."""
    if len(set(la)) < len(la) or len(set(lb)) < len(lb):  # a diagonal within one operand
        res = [x for x in dict.fromkeys(la + lb) if x in keep]
        return jnp.einsum(a, la, b, lb, res, precision=lax.Precision.HIGHEST), res
    a, la = _sum_own(a, la, set(lb), keep)
    b, lb = _sum_own(b, lb, set(la), keep)
    if _free_size(b, lb, la) >= SWAP_ROWS * _free_size(a, la, lb):  # the wider one left
        a, la, b, lb = b, lb, a, la
    sa, sb = set(la), set(lb)
    batch = [x for x in la if x in sb and x in keep]
    summed = [x for x in la if x in sb and x not in keep]
    free_a = [x for x in la if x not in sb]
    free_b = [x for x in lb if x not in sa]
    sizes = dict(zip(la, a.shape)) | dict(zip(lb, b.shape))
    n = lambda labels: math.prod(sizes[x] for x in labels)

    def matrix(arr, labels, free):
        order = [labels.index(x) for x in batch + free + summed]
        return arr.transpose(order).reshape(n(batch), n(free), n(summed))

    product = lax.dot_general(
        matrix(a, la, free_a),
        matrix(b, lb, free_b),
        (((2,), (2,)), ((0,), (0,))),
        precision=lax.Precision.HIGHEST,
    )
    res = batch + free_a + free_b
    return product.reshape([sizes[x] for x in res]), res


def _free_size(arr: jax.Array, labels: Labels, other: Labels) -> int:
    """How many values ``arr`` has along its labels not in ``other`` (its rows in the product)."""
    return math.prod(n for x, n in zip(labels, arr.shape) if x not in other)


def _sum_own(arr: jax.Array, labels: Labels, other: set[int], keep: set[int]):
    """``arr`` summed over its labels that are neither in the other operand nor kept."""
    own = [k for k, x in enumerate(labels) if x not in other and x not in keep]
    if not own:
        return arr, list(labels)
    return arr.sum(axis=tuple(own)), [x for x in labels if x in other or x in keep]


class RunningContractor:
    """Runs each einsum pairwise along the path of least estimated time (``_plan``, on the
    active cost table), each pair one matrix product (:func:`run_path`); a use's Jacobian
    factor is taken as formed where it was."""

    def contract(self, einsum: Einsum) -> jax.Array:
        subs, out = einsum.subscripts, tuple(einsum.out)
        path, plan_seconds = plan(subs, einsum.shapes, out, einsum.itemsize())
        sizes = einsum.sizes()
        if math.prod(sizes[x] for x in einsum.out) > LAYOUT_OUT:  # see LAYOUT_OUT
            args = []
            for arr, labels in einsum.operands:
                args += [arr, labels]
            return jnp.einsum(*args, einsum.out, optimize=path, precision=lax.Precision.HIGHEST)
        mirror = einsum.mirror
        if mirror is not None and not (
            plan_seconds >= PAIRS_MIN_S and _pairs_pay(einsum, path)
        ):  # see PAIRS_MIN_S
            mirror = None
        return run_path(einsum.operands, einsum.out, path, mirror)

    def factor(self, einsum: Einsum, formed: jax.Array | None, cost=None, d=None) -> jax.Array:
        return self.contract(einsum) if formed is None else formed


RUNNING = RunningContractor()


class PricingContractor:
    """Prices every einsum, step by step on its planned path (``_plan``) on ``table``, into
    ``seconds``, and records the values of every operand in ``factors``; with ``compute``, also
    runs it (:class:`RunningContractor`, so that the priced trace is the method's program), else
    returns zeros of its shape. A use's Jacobian factor is priced as its einsum, whether it is
    formed by the primitive's transpose or not, except where the rule's own formulation says
    what it runs (``cost``, :class:`FactorCost`): then as that, and a structure's ``d`` that it
    does not read is recorded in ``spared`` (its values are not made for this factor).
    ``same`` (``x2=None``): a step of side 2 alone repeats side 1's and is not counted.
    ``produced`` holds what it returned (a use's Jacobian factor among them): their writes are
    counted in the steps that priced them."""

    def __init__(self, table: CostTable, itemsize: int, same: bool, compute: bool):
        self.table, self.itemsize, self.same, self.compute = table, itemsize, same, compute
        self.seconds = 0.0  # every einsum step
        self.factors: dict[int, tuple[Any, float]] = {}  # per operand (kept alive): its values
        self.produced: dict[int, Any] = {}  # per result returned (kept alive): the result
        self.spared: dict[int, tuple[Any, float]] = {}  # d not read by its factor: its values

    def price(self, einsum: Einsum) -> None:
        subs, out = einsum.subscripts, tuple(einsum.out)
        path, _ = plan(subs, einsum.shapes, out, self.itemsize, self.table)
        for merged, seconds in side_steps(path, einsum, self.itemsize, self.table, self.same):
            if merged == {2} and self.same:
                continue  # the same as side 1's step
            self.seconds += seconds
        for o, _ in einsum.operands:  # keyed by identity; kept so that its id is not reused
            self.factors[id(o)] = (o, math.prod(o.shape))

    def contract(self, einsum: Einsum) -> jax.Array:
        self.price(einsum)
        if self.compute:
            result = RUNNING.contract(einsum)
        else:
            sizes = einsum.sizes()
            result = jnp.zeros([sizes[i] for i in einsum.out], einsum.operands[0][0].dtype)
        self.produced[id(result)] = result
        return result

    def factor(self, einsum: Einsum, formed: jax.Array | None, cost=None, d=None) -> jax.Array:
        if formed is None:
            return self.contract(einsum)
        if cost is None:
            self.price(einsum)
        else:
            self.price_products(cost, math.prod(formed.shape) // cost.out)
            for o, _ in einsum.operands:  # what the formulation reads, ``d`` only if it says so
                if o is not d or cost.reads_d:
                    self.factors[id(o)] = (o, math.prod(o.shape))
            if d is not None and not cost.reads_d:
                self.spared[id(d)] = (d, math.prod(d.shape))
        self.produced[id(formed)] = formed
        return formed

    def price_products(self, cost: FactorCost, examples: int) -> None:
        """Prices ``examples`` times what ``cost`` says a rule's factor runs per example (its
        products batched over the examples, one step each)."""
        flops = 2.0 * examples * cost.m * cost.k * cost.n
        kind = contraction_kind(cost.m, cost.k, cost.n)
        nbytes = examples * cost.values * self.itemsize
        self.seconds += self.table.seconds(flops, nbytes, kind, steps=cost.steps)

    def spared_values(self) -> float:
        """The values of the structures' ``d`` that no priced step reads (see ``spared``)."""
        return sum(n for key, (_, n) in self.spared.items() if key not in self.factors)
