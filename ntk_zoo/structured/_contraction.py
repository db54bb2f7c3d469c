"""The contraction: one param leaf's kernel for one output leaf, from its uses' factors.

The uses chosen dense (``_choice.choose_dense``) are summed into one Jacobian factor per side;
then one einsum per pair of the remaining uses and that pseudo-use, a use's pair with itself
starting from its group's cotangent Gram where ``_choice.shared_grams`` chose one. Every einsum
goes through a :class:`Contractor` (``_contractor``), which runs it or prices it.
"""

from __future__ import annotations

import itertools
from typing import Any

import jax

from ntk_zoo.core import tree_sum
from ntk_zoo.structured._choice import DenseChoice, SharedGram
from ntk_zoo.structured._contractor import Contractor
from ntk_zoo.structured._factors import Use, UseFactors
from ntk_zoo.structured._operands import LeafOperands

Grams = dict[int, dict[int, tuple[jax.Array, frozenset]]]  # leaf -> use -> (G, shared axes)


def compute_grams(grams: list[SharedGram], contractor: Contractor) -> Grams:
    """Per contracted leaf, ``{use: (G, shared axes)}``: each shared Gram computed once."""
    out: Grams = {}
    for gram in grams:
        g = contractor.contract(gram.einsum)
        for i, u in gram.users:
            out.setdefault(i, {})[u] = (g, gram.shared)
    return out


def contract_leaf(s: LeafOperands, dense: DenseChoice, grams: dict, contractor: Contractor) -> Any:
    """The kernel of one param leaf for output leaf ``s.j``, in canonical order (unscaled).

    The uses in ``dense`` are first summed into one Jacobian factor per side
    ``J = Σ_u ∂f/∂y_u · ∂y_u/∂w`` (a pseudo-use without structure); then one einsum per pair of
    the remaining uses and that pseudo-use, a use's pair with itself starting from its group's
    cotangent Gram when ``grams`` (this leaf's, ``use -> (G, shared axes)``) has one for it.
    """
    leaf = s.leaf
    entries = [(u, leaf.uses[u], s.arrays[0][u], s.arrays[1][u]) for u in range(len(leaf.uses))]
    entries = [e for e in entries if e[0] not in dense.uses]
    if dense.uses:
        sides = (1,) if s.same else (1, 2)
        factors = [_dense_factor(s, dense, side, contractor) for side in sides]
        if s.same:
            factors.append(factors[0])
        entries.append(("dense", Use(pullback=True), *factors))
    terms = []
    mirror = _mirror(s)
    for (u, use1, a1, _), (v, use2, _, a2) in itertools.product(entries, repeat=2):
        gram = grams.get(u) if u == v else None
        spec = s.pair_spec((u, use1, a1), (v, use2, a2), gram)
        if u == v and mirror is not None:
            spec = spec._replace(mirror=mirror)
        terms.append(contractor.contract(spec))
    return tree_sum(terms)


def _mirror(s: LeafOperands) -> tuple[tuple[int, int], ...] | None:
    """With ``x2=None``, a use paired with itself gives a symmetric kernel block: side 1's free
    output labels and their side-2 twins (the examples' first), for ``Einsum.mirror``; None
    where the two sides differ or the examples are not a free axis of both."""
    if not s.same or not s.batch[0]:
        return None
    (n1,), (n2,) = s.batch
    if n1 == n2 or n1 not in s.out or n2 not in s.out:
        return None
    first, second = s.labels
    twins = [(first[k], second[k]) for k in first if first[k] != second[k]]
    return ((n1, n2), *((a, b) for a, b in twins if a != n1))


def _dense_factor(
    s: LeafOperands, dense: DenseChoice, side: int, contractor: Contractor
) -> UseFactors:
    """The dense uses' Jacobian factors of one side, summed: a pseudo-use's factors."""
    terms = []
    for u in dense.uses:
        arrays, use = s.arrays[side - 1][u], s.leaf.uses[u]
        if use.pullback:
            terms.append(arrays.g[s.j])
        else:
            spec = dense.specs[u] if side == 1 else s.dense_spec(2, u)
            formed = None if arrays.j is None else arrays.j[s.j]
            # the rule's own costs are side 1's (``Use`` is static, made on side 1's shapes): a
            # different x2's factor is priced as its einsum
            own = use.factor_costs and formed is not None and (side == 1 or s.same)
            cost = use.factor_costs[s.j] if own else None
            terms.append(contractor.factor(spec, formed, cost, arrays.d))
    return UseFactors(g={s.j: tree_sum(terms)})
