"""The per-leaf choice: which uses of a param leaf are contracted through their structure and
which are summed first into the leaf's dense Jacobian factor, and which uses start from a
cotangent Gram shared with the uses of the same ``∂f/∂y``. Both by estimated seconds (``_plan``
on the active cost table), unless :class:`StructuredOptions` force them."""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import jax

from ntk_zoo.structured._contractor import Einsum, side_steps
from ntk_zoo.structured._factors import Use, UseFactors
from ntk_zoo.structured._operands import LeafOperands
from ntk_zoo.structured._plan import plan

_EXHAUSTIVE_USES = 10  # structured uses up to which every subset is tried
# Relative tolerance within which two costs tie. On a tie the uses are summed densely when the
# leaf's Jacobian factor is at most _TIE_DENSE_BYTES per side: where the structured pairs'
# cheapest order is the per-example Jacobian product itself (convolutions, small dense layers),
# the same arithmetic then runs faster as the primitive's own transpose followed by one matrix
# product (measured on the 2-core CPU, N=16: the small conv and ViT with 8 logits, factors of
# 2-5 MB, 1.15-1.25x faster); with larger factors (the conv with 100 logits, ~60 MB) the
# structured einsums were faster (1.1x), so larger ties stay structured.
_TIE = 1e-9
_TIE_DENSE_BYTES = 8 * 2**20


def spec_seconds(einsum: Einsum, same: bool = False) -> float:
    """The estimated seconds of ``einsum`` on its planned path (``_plan``, on the active cost
    table). With ``same`` (``x2=None``: both sides' operands are the same arrays) a step that
    involves side 2 only repeats side 1's and is computed once (XLA merges them), so it is not
    counted again."""
    itemsize = einsum.itemsize()
    path, total = plan(einsum.subscripts, einsum.shapes, tuple(einsum.out), itemsize)
    if not same or not einsum.sides:
        return total
    total = 0.0
    for merged, seconds in side_steps(path, einsum, itemsize):
        if merged != {2}:
            total += seconds
    return total


class DenseChoice(NamedTuple):
    """The uses of a leaf summed into one dense factor per side (sorted), and the einsums of
    side 1's dense factors by use (reused to size side 2's)."""

    uses: list[int]
    specs: dict[int, Einsum | None]


def choose_dense(s: LeafOperands, mode: str) -> DenseChoice:
    """The uses whose Jacobian factors are summed into one dense factor per side (a pseudo-use
    contracted like any other).

    ``structured``: none (one einsum per pair of uses). ``jacobian``: every use (the leaf's
    per-example Jacobian product, Jacobian contraction's arithmetic for this leaf). ``auto``:
    uses that have no structure (pullbacks) always, since summing before contracting is exact
    and never costs more; of the others, the subset of least estimated cost — per use, its
    dense factor (once per side) against its pair einsums with every other use — on a tie the
    largest such subset if the dense factor is small, else the smallest (``_TIE``).
    """
    uses = s.leaf.uses
    if mode == "structured":
        return DenseChoice([], {})
    specs = {u: s.dense_spec(1, u) for u, use in enumerate(uses) if not use.pullback}
    able = [u for u, spec in specs.items() if spec is not None]
    pull = [u for u, use in enumerate(uses) if use.pullback]
    if mode == "jacobian":
        return DenseChoice(sorted(pull + able), specs)
    kept = [u for u in range(len(uses)) if u not in pull]  # candidates to keep structured
    a1 = s.arrays[0]
    if not able and not pull:
        dense_struct = None
    else:
        dense_struct = jax.ShapeDtypeStruct(
            _dense_shape(s, a1, pull, specs, able), a1[0].g[s.j].dtype
        )
    pseudo = ("dense", Use(pullback=True), UseFactors(g={s.j: dense_struct}))
    real = lambda u, side: (u, uses[u], s.arrays[side - 1][u])
    pair = {}
    cost = lambda einsum: spec_seconds(einsum, s.same)
    for u in kept:
        for v in kept:
            pair[u, v] = cost(s.pair_spec(real(u, 1), real(v, 2)))
    to_dense, dense_pair = {}, 0.0
    if dense_struct is not None:
        dense_pair = cost(s.pair_spec(pseudo, pseudo))
        for v in kept:
            to_dense[v] = cost(s.pair_spec(pseudo, real(v, 2))) + cost(
                s.pair_spec(real(v, 1), pseudo)
            )
    per_side = 1 if s.same else 2
    one = {u: per_side * spec_seconds(specs[u]) for u in able}

    def total(dense: tuple[int, ...]) -> float:
        rest = [u for u in kept if u not in dense]
        structured = sum(pair[u, v] for u in rest for v in rest)
        c = sum(one[u] for u in dense)
        if dense or pull:
            c += dense_pair
            structured += sum(to_dense[v] for v in rest)
        return c + structured

    if len(able) <= _EXHAUSTIVE_USES:
        subsets = itertools.chain.from_iterable(
            itertools.combinations(able, r) for r in range(len(able) + 1)
        )
    else:
        subsets = [(), tuple(able)]
    costs = {d: total(d) for d in subsets}
    least = min(costs.values())
    tied = [d for d, c in costs.items() if c <= least * (1 + _TIE)]
    small = dense_struct is not None and (
        math.prod(dense_struct.shape) * dense_struct.dtype.itemsize <= _TIE_DENSE_BYTES
    )
    best = max(tied, key=len) if small else min(tied, key=len)  # ties: see _TIE
    return DenseChoice(sorted(pull + list(best)), specs)


def _dense_shape(s: LeafOperands, a1, pull, specs, able) -> tuple[int, ...]:
    if pull:
        return tuple(a1[pull[0]].g[s.j].shape)
    spec = specs[able[0]]
    sizes = spec.sizes()
    return tuple(sizes[label] for label in spec.out)


class SharedGram(NamedTuple):
    """One group's cotangent Gram: its einsum, the ``y`` axes it sums (``shared``), and the
    ``(leaf, use)`` pairs whose diagonal pair einsum starts from it."""

    einsum: Einsum
    shared: frozenset
    users: list[tuple[int, int]]


def shared_grams(
    sides: list[LeafOperands | None], dense: list, cts1: list, cts2: list, mode: str
) -> list[SharedGram]:
    """The cotangent Grams worth computing once, for the uses (across leaves, kept structured)
    of one group (``_factors._cotangent_groups``: the same ``∂f/∂y``).

    Their pair einsums each contain the product of the two sides' ``∂f/∂y`` over the ``y`` axes
    that every use of the group pairs with a param axis (a dense layer's output features for
    ``W`` and ``b``). ``G`` is that product, computed once; each use then contracts it with its
    own structure (``W``: the inputs' Gram; ``b``: a sum over the broadcast axes). ``auto``: a
    group computes ``G`` when its cost plus each use's cheaper of (its own einsum, from ``G``) is
    below the uses' own einsums, by estimated cost; ``always``: every group with a kept use;
    ``never`` (``mode``: :attr:`StructuredOptions.grams`).
    """
    members: dict[int, list] = {}
    for i, s in enumerate(sides):
        if s is None:
            continue
        for u, use in enumerate(s.leaf.uses):
            if use.group >= 0 and u not in dense[i].uses:
                members.setdefault(use.group, []).append((i, u))
    out: list[SharedGram] = []
    if mode == "never":
        return out
    for gid, group in members.items():
        if len(group) < 2 and mode != "always":
            continue
        i0, u0 = group[0]
        cts = (cts1[gid][sides[i0].j], cts2[gid][sides[i0].j])
        y_shape = cts[0].shape[cts[0].ndim - sides[i0].leaf.uses[u0].y_ndim :]
        # y axes of size 1 carry nothing for G (summing one element or keeping it is the same):
        # G sums them, and they neither pair nor block a use (see _operands.pair_spec)
        unit = frozenset(a for a, n in enumerate(y_shape) if n == 1)
        uses = {(i, u): sides[i].leaf.uses[u] for i, u in group}
        traces = {k: frozenset(a for a, _ in use.trace) - unit for k, use in uses.items()}
        paired = frozenset.intersection(*traces.values())
        # in G, a y axis is either summed (shared) or kept once per side: the uses whose every
        # param-paired y axis of size > 1 is shared (no diagonal pairs there) take it
        group = [
            k
            for k, use in uses.items()
            if traces[k] == paired and all(a in unit for a, _ in use.diag)
        ]
        if not group or (len(group) < 2 and mode != "always"):
            continue
        shared = paired | unit
        s0 = sides[group[0][0]]
        gram = s0.gram_spec(cts, shared)
        sizes = gram.sizes()
        struct = jax.ShapeDtypeStruct(tuple(sizes[label] for label in gram.out), cts[0].dtype)
        chosen = []
        saving = 0.0
        for i, u in group:
            s, use = sides[i], sides[i].leaf.uses[u]
            one, two = (u, use, s.arrays[0][u]), (u, use, s.arrays[1][u])
            # built in every mode: building a spec numbers its labels, and the numbering (so the
            # einsums' subscripts, their programs and their rounding) must not depend on `mode`
            own_spec = s.pair_spec(one, two)
            own = spec_seconds(own_spec, s.same) if mode == "auto" else 0.0
            from_g = s.pair_spec(one, two, (struct, shared))
            via = spec_seconds(from_g, s.same) if mode == "auto" else -1.0
            if via < own:
                chosen.append((i, u))
                saving += own - via
        if not chosen or (mode == "auto" and spec_seconds(gram, s0.same) >= saving):
            continue
        out.append(SharedGram(gram, shared, chosen))
    return out
