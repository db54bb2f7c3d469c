"""NTK-vector products: ``Θ(x1, x2)·v = J(x1) (J(x2)ᵀ v)`` without forming a Jacobian.

Time ``n1·n2·o·[FP]``. Each kernel column is one VJP at ``x2`` (of a basis vector of the output
space) followed by one JVP at ``x1``; the basis is ``vmap``-ed. Traced and diagonal axes are
applied *while* computing: each column keeps only the entries of ``f(x1)`` that match its basis
vector on those axes, so no ``o×o`` block is ever stored. With ``vmap_axes``, a batch axis that is
traced or diagonal pairs examples one to one (``n`` pairs instead of ``n1·n2``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ntk_zoo.core import (
    Counts,
    LeafAxes,
    NtkMethod,
    Problem,
    batch_mode,
    check_params,
    split_kwargs,
    to_layout,
)

PyTree = Any


def ntk_vp_fn(
    f: Callable[..., PyTree], x1: PyTree, x2: PyTree | None, params: PyTree, **kwargs: Any
) -> Callable[[PyTree], PyTree]:
    """Returns the matrix-free NTK operator ``v -> Θ(x1, x2)·v``.

    ``Θ(x1, x2)·v = J(x1) J(x2)ᵀ v`` costs one VJP at ``x2`` and one JVP at ``x1`` (about three
    forward passes) and never forms a Jacobian or the kernel. Cross terms between output leaves are
    included, as in ``J(x1) J(x2)ᵀ`` itself. This is the operator that Lanczos-type spectrum
    estimates use.

    Args:
      f: ``f(params, x, **kwargs)`` returning an array or pytree of arrays.
      x1: inputs whose outputs index the result.
      x2: inputs whose outputs index ``v``; ``None`` means ``x1`` (one forward pass is shared).
      params: the parameters (pytree of float arrays).
      **kwargs: passed to ``f``; a 2-tuple value is ``(value for x1, value for x2)``.

    Returns:
      ``vp(v)``, with ``v`` shaped like ``f(params, x2)`` and the result like ``f(params, x1)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from ntk_zoo import ntk_vp_fn
      >>> f = lambda p, x: jnp.tanh(x @ p["w"])
      >>> params = {"w": jnp.ones((3, 2))}
      >>> x = jnp.arange(12.0).reshape(4, 3) / 12
      >>> vp = ntk_vp_fn(f, x, None, params)
      >>> vp(jnp.ones((4, 2))).shape
      (4, 2)
    """
    check_params(params)
    kw1, kw2 = split_kwargs(kwargs, x2 is not None)
    _, jvp1 = jax.linearize(lambda p: f(p, x1, **kw1), params)
    if x2 is None:
        vjp2 = jax.linear_transpose(jvp1, params)
    else:
        _, vjp2 = jax.vjp(lambda p: f(p, x2, **kw2), params)

    def vp(v: PyTree) -> PyTree:
        (u,) = vjp2(v)
        return jvp1(u)

    return vp


def _select_columns(
    jvp1: Callable, vjp2: Callable, fx2: list, treedef: Any, leaf: int, axes: LeafAxes
) -> jax.Array:
    """Unscaled kernel of output leaf ``leaf`` in canonical order, column by column."""
    b_shape = tuple(fx2[leaf].shape)
    size = int(np.prod(b_shape, dtype=np.int64))
    picked = sorted(axes.trace + axes.diagonal)

    def column(j):
        cotangent = [jnp.zeros(s.shape, s.dtype) for s in fx2]
        cotangent[leaf] = (jnp.arange(size) == j).astype(fx2[leaf].dtype).reshape(b_shape)
        (u,) = vjp2(jax.tree.unflatten(treedef, cotangent))
        col = jax.tree.leaves(jvp1(u))[leaf]
        index = jnp.unravel_index(j, b_shape) if b_shape else ()
        for i in reversed(picked):  # keep only entries matching the basis vector there
            col = lax.dynamic_index_in_dim(col, index[i], axis=i, keepdims=False)
        return col

    cols = jax.vmap(column)(jnp.arange(size))
    cols = cols.reshape(b_shape + cols.shape[1:]).sum(axis=axes.trace)
    kept = [i for i in range(axes.ndim) if i not in axes.trace]
    n_kept, free = len(kept), axes.free
    perm = [kept.index(i) for i in axes.diagonal]
    perm += [n_kept + r for r in range(len(free))]
    perm += [kept.index(i) for i in free]
    return cols.transpose(perm)


def _pair_kernels(
    f1: Callable, f2: Callable | None, params: PyTree, axes: list[LeafAxes], sum_params: bool
) -> list:
    """Canonical-order kernels of every output leaf of ``f1``/``f2`` (``f2=None``: same)."""
    if not sum_params:
        leaves, tdef = jax.tree.flatten(params)

        def only(fn, q):
            return lambda pq: fn(tdef.unflatten([*leaves[:q], pq, *leaves[q + 1 :]]))

        per_param = [
            _pair_kernels(only(f1, q), None if f2 is None else only(f2, q), leaf, axes, True)
            for q, leaf in enumerate(leaves)
        ]
        return [[k[i] for k in per_param] for i in range(len(axes))]

    fx1, jvp1 = jax.linearize(f1, params)
    if f2 is None:
        fx2, vjp2 = fx1, jax.linear_transpose(jvp1, params)
    else:
        fx2, vjp2 = jax.vjp(f2, params)
    fx2_leaves, treedef = jax.tree.flatten(fx2)
    return [_select_columns(jvp1, vjp2, fx2_leaves, treedef, i, ax) for i, ax in enumerate(axes)]


def _example_axes(axes: LeafAxes, batch: int) -> LeafAxes:
    shift = lambda t: tuple(i - (i > batch) for i in t if i != batch)
    return LeafAxes(axes.ndim - 1, shift(axes.trace), shift(axes.diagonal))


def _from_example_order(kernel: jax.Array, axes: LeafAxes, batch: int, mode: str) -> jax.Array:
    """Per-pair canonical kernels with leading pair axes -> the full canonical order."""
    ex = _example_axes(axes, batch)
    lead = {"grid": 2, "diagonal": 1, "trace": 0}[mode]
    to_ex = lambda i: i - (i > batch)
    d_pos = {i: lead + k for k, i in enumerate(ex.diagonal)}
    f1_pos = {i: lead + len(ex.diagonal) + k for k, i in enumerate(ex.free)}
    f2_pos = {i: lead + len(ex.diagonal) + len(ex.free) + k for k, i in enumerate(ex.free)}
    perm = [0 if i == batch else d_pos[to_ex(i)] for i in axes.diagonal]
    perm += [0 if i == batch else f1_pos[to_ex(i)] for i in axes.free]
    perm += [1 if i == batch else f2_pos[to_ex(i)] for i in axes.free]
    return kernel.transpose(perm)


def ntk_vector_products(problem: Problem, sum_params: bool = True) -> list:
    """Per output leaf, the unscaled kernel (or a list over param leaves if not ``sum_params``)."""
    p = problem
    n_out = len(p.axes)
    if p.vmap is None:
        f1 = lambda params: p.f(params, p.x1, **p.kwargs1)
        f2 = None if p.x2 is None else (lambda params: p.f(params, p.x2, **p.kwargs2))
        kernels = _pair_kernels(f1, f2, p.params, p.axes, sum_params)
        return [_layout(k, ax) for k, ax in zip(kernels, p.axes)]

    # Group output leaves by how their batch axis pairs examples.
    modes = {}
    for i, (ax, b) in enumerate(zip(p.axes, p.vmap.out_axes)):
        mode = batch_mode(ax, b)
        modes.setdefault(mode, []).append(i)

    x2 = p.x1 if p.x2 is None else p.x2
    xa1, ka1 = p.vmap_in_axes(p.x1, p.kwargs1)
    xa2, ka2 = p.vmap_in_axes(x2, p.kwargs2)
    results: list = [None] * n_out
    for mode, ids in modes.items():
        ex_axes = [_example_axes(p.axes[i], p.vmap.out_axes[i]) for i in ids]

        def group(params, x, kw, ids=ids):
            leaves = jax.tree.leaves(p.f_example(params, x, kw))
            return tuple(leaves[i] for i in ids)

        def pair(x1, kw1, x2, kw2, group=group, ex_axes=ex_axes):
            return _pair_kernels(
                lambda q: group(q, x1, kw1),
                lambda q: group(q, x2, kw2),
                p.params,
                ex_axes,
                sum_params,
            )

        if mode == "grid":
            inner = jax.vmap(pair, in_axes=(None, None, xa2, ka2))
            out = jax.vmap(inner, in_axes=(xa1, ka1, None, None))(p.x1, p.kwargs1, x2, p.kwargs2)
        else:
            out = jax.vmap(pair, in_axes=(xa1, ka1, xa2, ka2))(p.x1, p.kwargs1, x2, p.kwargs2)
            if mode == "trace":
                out = jax.tree.map(lambda k: k.sum(0), out)
        for i, k in zip(ids, out):
            b = p.vmap.out_axes[i]
            k = jax.tree.map(lambda a, i=i, b=b, m=mode: _from_example_order(a, p.axes[i], b, m), k)
            results[i] = _layout(k, p.axes[i])
    return results


def _layout(kernel: Any, axes: LeafAxes) -> Any:
    return jax.tree.map(lambda k: to_layout(k, axes), kernel)


def _compute(problem: Problem, sum_params: bool) -> list:
    per_leaf = ntk_vector_products(problem, sum_params)
    if sum_params:
        return per_leaf
    param_def = jax.tree.structure(problem.params)
    return [jax.tree.unflatten(param_def, k) for k in per_leaf]


def _cost(p: Problem, c: Counts) -> float:
    """Seconds of ``o`` VJPs per ``x2`` example (writing ``n2·o·p`` values), then of one JVP
    (about two forward passes) per kernel column and pair of examples (``n`` pairs when the batch
    axis is traced or diagonal), reading them; whole passes, at the matmul rate."""
    out_axes = [None] * len(c.out2) if p.vmap is None else p.vmap.out_axes
    jvps = 0.0
    for leaf_out2, ax, b in zip(c.out2, p.axes, out_axes):
        paired = b is not None and b in ax.trace + ax.diagonal
        jvps += (c.n1 if paired else c.n1 * c.n2) * leaf_out2 / c.n2
    v_values = sum(c.out2) * c.n_params
    vjp = c.phase((1 + 2 * c.o2) * c.fp2, v_values + c.o2 * c.y2, "pass")
    jvp = c.phase(jvps * 2 * c.fp1 / c.n1, v_values + jvps * c.y1 / c.n1, "pass")
    return vjp + jvp


NTK_VECTOR_PRODUCTS = NtkMethod("ntk_vector_products", _compute, _cost)
