"""A layer stack contracted as one leaf: the parts of a stacked param merged back, layer axis first.

``_roots`` splits a param read through disjoint slices (a layer stack ``W[l]`` of an unrolled
``scan``) into one part per slice, each with its own uses. Contracted part by part, the kernel
is ``Σ_l Θ_l``: ``L`` copies of every einsum, one per layer, in the program (and ``L`` times
the work for XLA's compile). When every part has the same uses (the same structure, on arrays
of the same shapes), the parts are merged into one leaf of shape ``(L, *part)`` whose uses
each have one more output axis, the layer, at the front of ``y``: ``y[l] = y_l`` pairs with
the param's layer axis ``l`` alone (``∂y[l]/∂w[l'] = δ_{ll'} ∂y_l/∂w_l``), as the batch axis of
a batched matrix product does. Each use's arrays are the parts' arrays stacked along that axis:
``∂f/∂y`` and the structure's dense block (where the use has one, the layer axis is one of its
diagonal pairs; otherwise a trace pair). The kernel of the merged leaf is then the same sum
``Σ_l Θ_l``, computed by one einsum per pair of uses with ``l`` a batch label summed at the end
(and where the parts shared cotangent Grams with another stack's parts, the merged uses share
one Gram that keeps ``l``: ``G[l] = Σ (∂f/∂y_l)(x1) (∂f/∂y_l)(x2)``).

Parts are merged only when nothing differs but the arrays' values: uses with maps or gathers,
or with a rule's own dense factor cost (a convolution's per-offset factor), stay parts (their
extra arrays or costs are per part), as do parts of different shapes (a ragged stack).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp

from ntk_zoo.structured._factors import Leaf, LeafFactors, SideFactors, Use, UseFactors


def merge_stacks(
    leaves: list[Leaf], f1: SideFactors, f2: SideFactors
) -> tuple[list[Leaf], SideFactors, SideFactors]:
    """``leaves`` and both sides' factors with each stack's parts merged into one leaf (those
    that can be: see the module's docstring). ``f2 is f1`` (``x2=None``) stays so."""
    same = f2 is f1
    cts1, cts2 = list(f1.cts), (None if same else list(f2.cts))
    groups: dict[tuple, int] = {}  # the parts' groups of a merged use -> the merged group
    out, out1, out2 = [], [], []
    start = 0
    while start < len(leaves):
        stop = start
        while stop < len(leaves) and leaves[stop].owner == leaves[start].owner:
            stop += 1
        run = range(start, stop)
        if len(run) > 1 and _mergeable([leaves[i] for i in run], f1, f2, run, same):
            leaf, uses = _merged_leaf([leaves[i] for i in run], groups, cts1, cts2)
            lf1 = _merged_factors(uses, [f1.leaves[i] for i in run])
            lf2 = lf1 if same else _merged_factors(uses, [f2.leaves[i] for i in run])
            out.append(leaf)
            out1.append(lf1)
            out2.append(lf2)
        else:
            out += [leaves[i] for i in run]
            out1 += [f1.leaves[i] for i in run]
            out2 += [f2.leaves[i] for i in run]
        start = stop
    s1 = SideFactors(cts=cts1, leaves=out1)
    return out, s1, (s1 if same else SideFactors(cts=cts2, leaves=out2))


def _shape(a: Any) -> tuple | None:
    return None if a is None else (tuple(a.shape), jnp.result_type(a))


def _arrays_key(lf: LeafFactors) -> tuple:
    uses = tuple(
        (
            tuple(_shape(g) for g in u.g),
            _shape(u.d),
            None if u.j is None else tuple(_shape(j) for j in u.j),
        )
        for u in lf.uses
    )
    return _shape(lf.scale), uses


def _mergeable(parts: list[Leaf], f1: SideFactors, f2: SideFactors, run: range, same: bool) -> bool:
    first = parts[0]
    if any(u.maps or u.has_src or u.factor_costs for u in first.uses):
        return False
    if any(isinstance(u.g, Mapping) for i in run for u in f1.leaves[i].uses):
        return False
    static = lambda leaf: (leaf.shape, leaf.scaled, tuple(_ungrouped(u) for u in leaf.uses))
    if any(static(p) != static(first) for p in parts[1:]):
        return False
    for u in range(len(first.uses)):
        if len({p.uses[u].group >= 0 for p in parts}) > 1:
            return False
    sides = (f1,) if same else (f1, f2)
    return all(len({_arrays_key(f.leaves[i]) for i in run}) == 1 for f in sides)


def _ungrouped(use: Use) -> Use:
    return dataclasses.replace(use, group=min(use.group, 0))


def _shift(pairs: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    return tuple((a + 1, b + 1) for a, b in pairs)


def _merged_use(use: Use, group: int) -> Use:
    if use.pullback:
        return dataclasses.replace(use, stacked=True)
    one = lambda axes: tuple(a + 1 for a in axes)
    layer = ((0, 0),)
    trace, diag = _shift(use.trace), _shift(use.diag)
    if use.has_d:  # the dense block holds the layer axis: a diagonal pair
        diag = layer + diag
    else:
        trace = layer + trace
    return dataclasses.replace(
        use,
        trace=trace,
        diag=diag,
        dense_y=one(use.dense_y),
        dense_w=one(use.dense_w),
        index_w=one(use.index_w),
        kept_y=(0, *one(use.kept_y)),
        group=group,
        y_ndim=use.y_ndim + 1 if group >= 0 else 0,
        stacked=True,
    )


def _merged_leaf(parts: list[Leaf], groups: dict, cts1: list, cts2: list | None) -> tuple:
    """The merged leaf, its merged groups' cotangents appended to ``cts1`` (and ``cts2``)."""
    uses = []
    for u, use in enumerate(parts[0].uses):
        group = -1
        if use.group >= 0:
            key = tuple(p.uses[u].group for p in parts)
            if key not in groups:
                groups[key] = len(cts1)
                for cts in (cts1,) if cts2 is None else (cts1, cts2):
                    cts.append(_stacked_cts([cts[g] for g in key]))
            group = groups[key]
        uses.append(_merged_use(use, group))
    first = parts[0]
    leaf = Leaf((len(parts), *first.shape), tuple(uses), first.scaled, first.owner, stacked=True)
    return leaf, parts[0].uses


def _stacked_cts(per_part: list[list]) -> list:
    """Per output leaf, the parts' ``∂f/∂y`` stacked along a new first axis (the layer)."""
    return [jnp.stack(arrays) for arrays in zip(*per_part, strict=True)]


def _merged_factors(uses: Sequence[Use], parts: list[LeafFactors]) -> LeafFactors:
    """One side's arrays of the merged leaf: the parts' arrays stacked along a new first axis,
    the layer (each einsum operand of a merged use has it first: ``_operands``), so that the
    stack is one copy of contiguous blocks and the layer a leading batch axis of the products."""
    merged = []
    for u in range(len(uses)):
        arrays = [p.uses[u] for p in parts]
        g = [jnp.stack(gs) for gs in zip(*(a.g for a in arrays), strict=True)]
        d = None if arrays[0].d is None else jnp.stack([a.d for a in arrays])
        j = None
        if arrays[0].j is not None:
            j = [jnp.stack(js) for js in zip(*(a.j for a in arrays), strict=True)]
        merged.append(UseFactors(d=d, g=g, j=j))
    scale = None if parts[0].scale is None else jnp.stack([p.scale for p in parts])
    return LeafFactors(scale=scale, uses=merged)
