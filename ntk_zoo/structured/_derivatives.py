"""The structured-derivatives NTK: ``∂f/∂y`` at every use of every param, contracted with each
use's structured ``∂y/∂w`` by one einsum per pair of uses (order chosen by cost).

For a param leaf ``w`` used by equations with outputs ``y_1..y_K``::

    Θ_w(x1, x2) = Σ_k Σ_l (∂f/∂y_k)(x1) (∂y_k/∂w)(x1) (∂y_l/∂w)(x2)ᵀ (∂f/∂y_l)(x2)ᵀ

Per leaf, the uses are contracted one of two exact ways, chosen by estimated cost (``_plan``;
``StructuredOptions`` may force it): through their structure, one einsum per pair ``(k, l)``;
or summed first into the leaf's per-example Jacobian factor ``J_w = Σ_k (∂f/∂y_k)(∂y_k/∂w)``
(Jacobian contraction's arithmetic for that leaf, in the same program), contracted once as
``J_w(x1) J_w(x2)ᵀ``. A mix is allowed: the summed uses act as one more use without structure.
Uses without structure (pullbacks) are always summed first, so a leaf with K of them costs one
contraction, not K². On a tie the Jacobian product is taken (the same arithmetic, by the
primitive's own transpose).

Uses whose ``∂f/∂y`` coincide (``y = x W`` read only by ``z = y + b``: a dense layer's ``W`` and
``b``, a convolution's kernel and bias, two products summed) share one ``∂f/∂y`` array and, where
it is cheaper, one cotangent Gram ``Σ (∂f/∂y)(x1)(∂f/∂y)(x2)`` over the output axes they all pair
with a param axis, which each use then contracts with its own structure; every leaf's kernel
stays separate (``sum_params=False``).

Everything per example (``∂f/∂y``, the structure factors) is computed under ``vmap`` when
``vmap_axes`` is given; the einsums then run over all example pairs at once.

The stages, one module each: ``_factors`` records the factors (per side), ``_operands`` labels
them as einsum operands, ``_choice`` makes the per-leaf choices, ``_contraction`` contracts,
through a ``_contractor`` that runs each einsum or prices it (``_cost``). This module runs them
in order.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ntk_zoo.core import LeafAxes, Problem, to_layout, tree_sum
from ntk_zoo.methods import jacobian_contraction
from ntk_zoo.structured import _choice
from ntk_zoo.structured._contraction import compute_grams, contract_leaf
from ntk_zoo.structured._contractor import RUNNING, Contractor
from ntk_zoo.structured._factors import side_factors
from ntk_zoo.structured._operands import Labels, LeafOperands
from ntk_zoo.structured._options import StructuredOptions
from ntk_zoo.structured._registry import NotTransposable
from ntk_zoo.structured._warnings import warn_once


def structured_derivatives(
    problem: Problem, contractor: Contractor = RUNNING, sum_params: bool = False
) -> list:
    """Per output leaf, a param-tree of that leaf's unscaled kernel contributions (with
    ``sum_params``, their sum: one array, see :func:`_summed`).

    ``contractor`` carries out each einsum (``_contractor``): the default runs them; the cost
    model passes one that prices each (and runs it, or returns zeros when only estimating).
    The problem's :class:`StructuredOptions` say how the uses of each param leaf are
    contracted (``uses``: through their structure, summed into the leaf's Jacobian factor, or
    the cheaper mix per leaf; ``grams``: whether uses with one ``∂f/∂y`` share its Gram); all are
    exact. A program JAX cannot transpose (a ``while_loop`` with a dynamic trip count) falls
    back, exactly, to forward-mode Jacobian contraction with a one-time warning.
    """
    try:
        return _structured(problem, contractor, problem.option(StructuredOptions), sum_params)
    except NotTransposable as e:
        key = str(e).splitlines()[0][:200]
        warn_once(
            ("not transposable", key),
            "structured_derivatives: this function's linearisation cannot be transposed "
            f"({key}); computing its kernel exactly by forward-mode Jacobian contraction "
            "instead.",
            stacklevel=5,
        )
        return jacobian_contraction(problem, forward=True)


def _structured(
    problem: Problem, contractor: Contractor, options: StructuredOptions, sum_params: bool
) -> list:
    f1, leaves = side_factors(problem, problem.x1, problem.kwargs1)
    f2 = f1 if problem.x2 is None else side_factors(problem, problem.x2, problem.kwargs2)[0]
    param_def = jax.tree.structure(problem.params)
    out = []
    for j, axes in enumerate(problem.axes):
        batch_axis = None if problem.vmap is None else problem.vmap.out_axes[j]
        shape = _kernel_canonical_shape(problem, j, axes)
        sides = [
            LeafOperands(leaf, a1, a2, j, axes, batch_axis, Labels()) if leaf.uses else None
            for leaf, a1, a2 in zip(leaves, f1.leaves, f2.leaves)
        ]
        dense = [None if s is None else _choice.choose_dense(s, options.uses) for s in sides]
        chosen = _choice.shared_grams(sides, dense, f1.cts, f2.cts, options.grams)
        grams = compute_grams(chosen, contractor)
        per_leaf: list = [[] for _ in range(param_def.num_leaves)]  # a leaf's parts (``_roots``)
        for i, s in enumerate(sides):
            if s is not None:
                per_leaf[leaves[i].owner].append(
                    contract_leaf(s, dense[i], grams.get(i, {}), contractor)
                )
        if sum_params:
            out.append(_summed(per_leaf, shape, problem.dtype, axes))
            continue
        kernels = []
        for parts in per_leaf:
            k = jnp.zeros(shape, problem.dtype) if not parts else tree_sum(parts)
            kernels.append(to_layout(k.astype(problem.dtype), axes))
        out.append(jax.tree.unflatten(param_def, kernels))
    return out


def _summed(per_leaf: list[list], shape: tuple[int, ...], dtype: Any, axes: LeafAxes) -> Any:
    """The kernel summed over param leaves, added in the order
    part 0 of every leaf, then part 1 of every leaf, ... (layer by layer: the unrolled model's
    order of its per-layer leaves).

    Why the order: a stacked leaf's parts (one per layer of an unrolled ``scan``) are dots'
    results behind the same reshape and transpose; added among themselves, XLA's reshape mover
    sinks those below one level of their sum per run of its simplification loop over the whole
    program (a balanced tree of 12 parts: 6 runs on the depth-12 MLP, against 3 unrolled).
    Next to a part of another leaf, whose result has another form (a bias's Gram against a
    weight's), nothing sinks: the same 3 runs as the same model unrolled."""
    rounds = max(map(len, per_leaf), default=0)
    terms = [parts[r] for r in range(rounds) for parts in per_leaf if r < len(parts)]
    if not terms:
        return to_layout(jnp.zeros(shape, dtype), axes)
    total = tree_sum(terms)  # in the parts' own dtypes, cast once: as the per-leaf sums are
    return to_layout(total if total.dtype == dtype else total.astype(dtype), axes)


def _kernel_canonical_shape(problem: Problem, j: int, axes: LeafAxes) -> tuple[int, ...]:
    s1 = jax.tree.leaves(problem.fx1)[j].shape
    s2 = jax.tree.leaves(problem.fx2)[j].shape
    return (
        tuple(s1[k] for k in axes.diagonal)
        + tuple(s1[k] for k in axes.free)
        + tuple(s2[k] for k in axes.free)
    )
