"""Jacobian contraction: ``Θ = J(x1) J(x2)ᵀ`` from explicit Jacobians.

Time ``n·o·[FP] + n1·n2·o²·p``, memory ``n·o·p + n1·n2·o²``. The Jacobian ``J(x)`` of every
output leaf w.r.t. every param leaf is built by ``jax.jacrev`` (per example under ``jax.vmap``
when ``vmap_axes`` is given), then each (output leaf, param leaf) pair is contracted with one
``lax.dot_general`` over the param axes and the traced axes, batching the diagonal axes. Under
``jit`` XLA schedules the contractions leaf by leaf.
"""

from __future__ import annotations

import math
from typing import Any

import jax
from jax import lax

from ntk_zoo.core import (
    Counts,
    LeafAxes,
    NtkMethod,
    Problem,
    contraction_kind,
    kernel_shape,
    to_layout,
    trace_size,
)

PyTree = Any


def _jacobian(problem: Problem, x: PyTree, kwargs: dict, forward: bool = False) -> PyTree:
    """Output-tree of param-trees of ``∂f(x)/∂params``, batch axes at their output positions."""
    jacobian = jax.jacfwd if forward else jax.jacrev
    if problem.vmap is None:
        return jacobian(lambda p: problem.f(p, x, **kwargs))(problem.params)
    x_axes, kw_axes = problem.vmap_in_axes(x, kwargs)
    out_axes = jax.tree.unflatten(problem.fx_treedef, problem.vmap.out_axes)
    jac = jacobian(problem.f_example)
    return jax.vmap(jac, in_axes=(None, x_axes, kw_axes), out_axes=out_axes)(
        problem.params, x, kwargs
    )


def contract(j1: jax.Array, j2: jax.Array, axes: LeafAxes) -> jax.Array:
    """Contracts two Jacobian leaves ``fx.shape + p.shape`` into one kernel leaf (unscaled).

    Both are laid out as ``(diagonal, free, traced·params)`` matrices first: XLA runs one
    batched matrix product far faster than a ``dot_general`` over many scattered axes.
    """
    param_axes = tuple(range(axes.ndim, j1.ndim))
    order = axes.diagonal + axes.free + axes.trace + param_axes

    def as_matrix(j):
        d = [j.shape[i] for i in axes.diagonal]
        f = [j.shape[i] for i in axes.free]
        k = math.prod(j.shape[i] for i in axes.trace + param_axes)
        return j.transpose(order).reshape(math.prod(d), math.prod(f), k), d, f

    m1, diag, free1 = as_matrix(j1)
    m2, _, free2 = as_matrix(j2)
    kernel = lax.dot_general(m1, m2, (((2,), (2,)), ((0,), (0,))), precision=lax.Precision.HIGHEST)
    return to_layout(kernel.reshape(diag + free1 + free2), axes)


def jacobian_contraction(problem: Problem, forward: bool = False) -> list[PyTree]:
    """Per output leaf, a param-tree of that leaf's unscaled kernel contributions.

    ``forward=True`` builds the Jacobians by forward mode (``jax.jacfwd``), which also works
    for programs that cannot be transposed (``lax.while_loop`` with a dynamic trip count).
    """
    j1 = _jacobian(problem, problem.x1, problem.kwargs1, forward)
    j2 = j1 if problem.x2 is None else _jacobian(problem, problem.x2, problem.kwargs2, forward)
    out = []
    for jac1, jac2, axes in zip(
        problem.fx_treedef.flatten_up_to(j1), problem.fx_treedef.flatten_up_to(j2), problem.axes
    ):
        out.append(jax.tree.map(lambda a, b, ax=axes: contract(a, b, ax), jac1, jac2))
    return out


def _cost(p: Problem, c: Counts) -> float:
    """Seconds of the Jacobians (a forward pass and ``o`` VJPs of about two passes per example,
    at the matmul rate, but for the convolutions' per-example weight gradients, grouped
    convolutions priced one by one at the table's ``conv_grad`` rate, their bytes at
    ``CONV_GRAD_BYTES_SHARE`` of the memory rate; writes ``n·o·p`` values), then of their
    contraction (``2·n1·n2·o²·p`` FLOPs, one product per pair of leaves; a small einsum when the
    kernel block per diagonal entry is small). The contraction moves what structured
    derivatives' pricing charges for the same Gram (``structured._plan._step``): each Jacobian
    read, laid out as the ``(diagonal, free, traced·params)`` matrix (:func:`contract`; under
    ``vmap`` the VJPs leave the output axis minor, so XLA copies it) and read again by the
    product, ``3·n·o·p`` values per side (once when ``x2=None``: one array), and the kernel
    written. Profiled (XLA:CPU, grid cells 14 and 16, N=32, O=8, ``trace_axes=(-1,)``, load
    3.5): the copies of the Jacobians took 50 of 113 ms and 39 of 133 ms of the ops' CPU time,
    where the contraction was priced as reading each Jacobian once, below its FLOP time."""
    jac_values = sum(c.out1) * c.n_params + (0 if p.x2 is None else sum(c.out2) * c.n_params)
    jac_values += c.passes_y
    jac_flops = (1 + 2 * c.o1) * c.fp1 + (0 if p.x2 is None else (1 + 2 * c.o2) * c.fp2)
    # each convolution's per-example weight gradients, a roofline of their own (o per example)
    sides = [(c.o1, c.grads1)] + ([] if p.x2 is None else [(c.o2, c.grads2)])
    grads = sum(
        c.phase(o * flops, o * values, "conv_grad", steps=0)
        for o, conv in sides
        for flops, values in conv
    )
    jac_flops -= c.o1 * c.conv1 + (0 if p.x2 is None else c.o2 * c.conv2)
    n_leaves = len(jax.tree.leaves(p.params))
    contraction = 0.0
    for a, b, ax, size1, size2 in zip(
        jax.tree.leaves(p.fx1), jax.tree.leaves(p.fx2), p.axes, c.out1, c.out2
    ):
        shape = kernel_shape(a.shape, b.shape, ax)  # interleaved: not indexed by output axis
        diag = math.prod(a.shape[i] for i in ax.diagonal)
        traced = trace_size(a.shape, ax)
        m, n = size1 / (diag * traced), size2 / (diag * traced)
        flops = 2.0 * math.prod(shape) * traced * c.n_params
        kind = contraction_kind(m, traced * c.n_params, n)
        read = (size1 if p.x2 is None else size1 + size2) * c.n_params  # J1 is J2 without x2
        moved = 3 * read + math.prod(shape)  # read, laid out, read by the product; kernel
        contraction += c.phase(flops, moved, kind, steps=n_leaves)
    return c.phase(jac_flops, jac_values, "pass") + grads + contraction


JACOBIAN_CONTRACTION = NtkMethod(
    "jacobian_contraction", lambda problem, sum_params: jacobian_contraction(problem), _cost
)
