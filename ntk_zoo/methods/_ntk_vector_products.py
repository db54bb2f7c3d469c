"""NTK-vector products: ``Θ(x1, x2)·v = J(x1) (J(x2)ᵀ v)`` without forming a Jacobian.

Time ``n1·n2·o·[FP]``. Each kernel column is one VJP at ``x2`` (of a basis vector ``e`` of the
output space) followed by one JVP at ``x1``; the basis is ``vmap``-ed, so all columns are one
batched computation. Traced and diagonal axes are applied *while* computing: each column keeps
only the entries of ``f(x1)`` that match its basis vector on those axes, so no ``o×o`` block is
ever stored. With ``vmap_axes``, a batch axis that is traced or diagonal pairs examples one to one
(``n`` pairs instead of ``n1·n2``).

**How the JVP is built.** ``J(x1)·u`` is linear in ``u`` and can be traced two ways, with the
same FLOPs: ``"linearized"`` (``jax.linearize`` at ``x1``) or ``"transposed"`` (the transpose of
the VJP at ``x1``, as neural-tangents builds it). They differ in how XLA lays out the batch of
VJP results ``u = J(x2)ᵀe`` that every JVP reads: the transposed JVP contracts each parameter
tangent in the layout the VJP wrote it, where the linearized one first copies the whole batch
(``n2·o·P`` values) into the layout of ``x @ dW`` — on an MLP (width 512, N=8) that copy is a
third of the time. When activations dominate (convolutions, attention: ``P`` below the values
``y`` one forward pass writes per example), the transposed JVP's activation-tangent steps carry
more transposes instead, and the linearized form is faster. So the form is chosen per problem:
``"transposed"`` when ``P >= y`` (per example with ``vmap_axes``, per batch without), else
``"linearized"``.

**Symmetric kernels.** With ``x2=None`` and ``vmap_axes``, ``Θ(x, x)`` is symmetric: with the
linearized form the examples are split into 2 blocks and only the 3 blocks on and above the
diagonal are computed (¾ of the JVPs for 1.5× the VJPs); the fourth is the transpose of its
mirror. With the transposed form (params dominate, so each recomputed VJP is costly) it is not.

**Memory bound.** The basis ``J(x2)ᵀe`` is computed in chunks of columns (``lax.map`` over
chunks, each chunk one ``vmap``) so that a chunk's VJP results and JVP activation tangents stay
within :data:`BASIS_BYTES` bytes, or ``VectorProductOptions.basis_bytes`` (one column is never
split); when all columns fit, it is a single ``vmap``. A symmetric kernel's chunk is sized for
one block program (``m`` examples' VJP results, ``m·m`` pairs' tangents), since each block is its
own program. When the VJP results of all columns fit half the budget (activations dominate),
they are computed at once before the loop and only the JVPs are chunked, in the rest of the
budget. The kernel is the same either way: each column is computed exactly once.

Why chunk as little as possible, and never the VJPs when avoidable: on XLA:CPU the per-example
weight gradients of a VJP lose their fast convolution layout inside ``lax.map``'s loop body
(``f01b_i01o->01bf`` grouped convolutions instead of the ``b01f_01io->b01f`` form they get
outside). The conv net with 100 logits at N=16 had its chunk sized for all ``n·n`` pairs, not
one block's, so its 100 columns ran as a 2-step ``lax.map``: 0.53-0.56x neural-tangents' VP,
which never chunks. Measured side by side on it at N=8, 2-core CPU under load 21 (so ratios
only): one ``vmap`` 6.38 s, a 4-step ``lax.map`` of VJPs and JVPs 25.9 s, the VJPs at once
and a 4-step ``lax.map`` of the JVPs 6.39 s. Unrolled chunks (a Python loop, with or without an
optimization barrier between them) are as fast but XLA schedules them together: 0.41 GiB of
temporaries against 0.43 GiB for one ``vmap`` (0.045 GiB for ``lax.map``): they bound nothing.
``VectorProductOptions`` may also force the form and the number of symmetric blocks.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

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
    count,
    split_kwargs,
    to_layout,
)

PyTree = Any

BASIS_BYTES = 4 * 2**30
"""Bytes one chunk of kernel columns may hold: its VJP results ``J(x2)ᵀe`` (``P`` values per
column and example of ``x2`` it is computed at) plus the activation tangents of its JVPs (``y``
values per column and pair of examples). Columns beyond it are computed in sequence. The
default of ``VectorProductOptions.basis_bytes``."""

FORMS = ("linearized", "transposed")


@dataclasses.dataclass(frozen=True)
class VectorProductOptions:
    """How ``method="ntk_vector_products"`` builds its JVPs and splits a symmetric kernel.

    Every choice is exact; they differ in time only. The defaults are the method's own choices
    (described at the top of this module); forcing one is for tests, benchmarks and for checking
    those choices on a machine.

    Attributes:
      form: how ``J(x1)·u`` is traced: ``"linearized"`` (``jax.linearize`` at ``x1``) or
        ``"transposed"`` (the transpose of the VJP at ``x1``); ``None`` (default):
        ``"transposed"`` when the params outnumber the values one forward pass writes, else
        ``"linearized"``.
      blocks: for ``x2=None`` with ``vmap_axes``, the number of blocks the examples are split
        into so that only the blocks on and above the diagonal are computed (``1``: none);
        ``None`` (default): 2 with the linearized form, 1 with the transposed one.
      basis_bytes: bytes one chunk of kernel columns may hold (their VJP results and JVP
        activation tangents); columns beyond it are computed in sequence, at least one per
        chunk. ``None`` (default): :data:`BASIS_BYTES`.

    Example:
      >>> import jax.numpy as jnp, ntk_zoo
      >>> f = lambda p, x: jnp.tanh(x @ p["w"])
      >>> params, x = {"w": jnp.ones((3, 4))}, jnp.ones((2, 3))
      >>> options = ntk_zoo.VectorProductOptions(form="linearized", blocks=2)
      >>> kernel_fn = ntk_zoo.ntk_fn(
      ...     f, method="ntk_vector_products", vmap_axes=0, vector_products=options
      ... )
      >>> kernel_fn(x, None, params).shape
      (2, 2)
    """

    form: str | None = None
    blocks: int | None = None
    basis_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.form is not None and self.form not in FORMS:
            raise ValueError(
                f"VectorProductOptions: `form` must be None or one of {FORMS}, got {self.form!r}."
            )
        for name in ("blocks", "basis_bytes"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(
                    f"VectorProductOptions: `{name}` must be None or an int >= 1, got {value!r}."
                )


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


def _map_columns(column: Callable, size: int, chunk: int) -> jax.Array:
    """``column(j)`` for ``j < size`` stacked, ``chunk`` columns per batched step.

    One ``vmap`` when everything fits; else ``lax.map`` over ``ceil(size / chunk)`` equal chunks
    (the last one padded by repeating column ``size - 1``, whose copies are dropped).
    """
    if chunk >= size:
        return jax.vmap(column)(jnp.arange(size))
    n_chunks = -(-size // chunk)
    chunk = -(-size // n_chunks)
    index = jnp.minimum(jnp.arange(n_chunks * chunk), size - 1).reshape(n_chunks, chunk)
    cols = lax.map(jax.vmap(column), index)
    return cols.reshape((n_chunks * chunk, *cols.shape[2:]))[:size]


def _select_columns(
    jvp1: Callable,
    vjp2: Callable,
    fx2: list,
    treedef: Any,
    leaf: int,
    axes: LeafAxes,
    plan: _Plan,
) -> jax.Array:
    """Unscaled kernel of output leaf ``leaf`` in canonical order, chunked as ``plan`` says."""
    b_shape = tuple(fx2[leaf].shape)
    size = int(np.prod(b_shape, dtype=np.int64))
    picked = sorted(axes.trace + axes.diagonal)

    def vjp(j):
        cotangent = [jnp.zeros(s.shape, s.dtype) for s in fx2]
        cotangent[leaf] = (jnp.arange(size) == j).astype(fx2[leaf].dtype).reshape(b_shape)
        (u,) = vjp2(jax.tree.unflatten(treedef, cotangent))
        return u

    def jvp(j, u):
        col = jax.tree.leaves(jvp1(u))[leaf]
        index = jnp.unravel_index(j, b_shape) if b_shape else ()
        for i in reversed(picked):  # keep only entries matching the basis vector there
            col = lax.dynamic_index_in_dim(col, index[i], axis=i, keepdims=False)
        return col

    jvp_chunk = _jvp_chunk(plan, size)
    if jvp_chunk is None:
        cols = _map_columns(lambda j: jvp(j, vjp(j)), size, plan.chunk)
    else:  # every VJP in one vmap, only the JVPs in chunks
        us = jax.vmap(vjp)(jnp.arange(size))
        column = lambda j: jvp(j, jax.tree.map(lambda a: a[j], us))
        cols = _map_columns(column, size, jvp_chunk)
    cols = cols.reshape(b_shape + cols.shape[1:]).sum(axis=axes.trace)
    kept = [i for i in range(axes.ndim) if i not in axes.trace]
    n_kept, free = len(kept), axes.free
    perm = [kept.index(i) for i in axes.diagonal]
    perm += [n_kept + r for r in range(len(free))]
    perm += [kept.index(i) for i in free]
    return cols.transpose(perm)


def _pair_kernels(
    f1: Callable,
    f2: Callable | None,
    params: PyTree,
    axes: list[LeafAxes],
    sum_params: bool,
    plan: _Plan,
) -> list:
    """Canonical-order kernels of every output leaf of ``f1``/``f2`` (``f2=None``: same)."""
    if not sum_params:
        leaves, tdef = jax.tree.flatten(params)

        def only(fn, q):
            return lambda pq: fn(tdef.unflatten([*leaves[:q], pq, *leaves[q + 1 :]]))

        per_param = [
            _pair_kernels(only(f1, q), None if f2 is None else only(f2, q), leaf, axes, True, plan)
            for q, leaf in enumerate(leaves)
        ]
        return [[k[i] for k in per_param] for i in range(len(axes))]

    if plan.form == "transposed":
        fx1, vjp1 = jax.vjp(f1, params)
        jvp1_t = jax.linear_transpose(vjp1, fx1)
        jvp1 = lambda u: jvp1_t((u,))[0]
        fx2, vjp2 = (fx1, vjp1) if f2 is None else jax.vjp(f2, params)
    else:
        fx1, jvp1 = jax.linearize(f1, params)
        if f2 is None:
            fx2, vjp2 = fx1, jax.linear_transpose(jvp1, params)
        else:
            fx2, vjp2 = jax.vjp(f2, params)
    fx2_leaves, treedef = jax.tree.flatten(fx2)
    return [
        _select_columns(jvp1, vjp2, fx2_leaves, treedef, i, ax, plan) for i, ax in enumerate(axes)
    ]


def _form(p: Problem, c: Counts) -> str:
    """``"transposed"`` when the params outnumber the values one forward pass writes (per
    example with ``vmap_axes``), else ``"linearized"`` (see the module docstring), unless the
    problem's :class:`VectorProductOptions` name a form."""
    forced = p.option(VectorProductOptions).form
    if forced is not None:
        return forced
    return "transposed" if c.n_params >= c.y1 / c.n1 else "linearized"


class _Plan(NamedTuple):
    form: str  # "linearized" or "transposed": how J(x1)·u is traced
    chunk: int  # kernel columns per batched step (VJP and JVP together)
    vjp_bytes: float = 0.0  # bytes of one column's VJP results
    jvp_bytes: float = 0.0  # bytes of one column's JVP tangents
    budget: float = float(BASIS_BYTES)  # bytes one chunk may hold


def _jvp_chunk(plan: _Plan, size: int) -> int | None:
    """JVP columns per step when the ``size`` columns' VJPs are better computed at once, before
    the chunked JVPs; ``None``: one ``vmap`` of VJP and JVP together (all fit), or chunks of
    both (the VJP results alone fill over half the budget).

    On XLA:CPU the per-example weight gradients of a VJP lose their fast convolution layout
    inside ``lax.map``'s loop (the conv net, N=8, 100 columns in 4 chunks: 3.6-4x slower than one
    ``vmap``); computed before the loop, the chunked kernel was as fast as the unchunked one.
    """
    if plan.chunk >= size or size * plan.vjp_bytes > plan.budget / 2:
        return None
    return max(1, int((plan.budget - size * plan.vjp_bytes) // max(plan.jvp_bytes, 1)))


def _plan(p: Problem, sum_params: bool, paired: bool) -> _Plan:
    """The JVP's form and the column chunk of ``p`` (see the module docstring).

    ``paired``: the batch axis pairs examples one to one (``n`` pairs, each with its own VJP
    results) rather than all ``n1·n2`` pairs (VJP results shared by the ``n1`` examples of
    ``x1``).
    """
    if any(math.prod(np.shape(leaf)) == 0 for leaf in jax.tree.leaves((p.fx1, p.fx2))):
        return _Plan("linearized", 1)  # no examples: nothing to compute, nothing to count
    c = count(p)
    y_pass = c.y1 / c.n1
    form = _form(p, c)
    # Without sum_params, one param leaf at a time: its own tangents, all the activations.
    leaves = jax.tree.leaves(p.params)
    p_values = c.n_params if sum_params else max(math.prod(np.shape(a)) for a in leaves)
    n_u = c.n1 if paired else c.n2
    n_pairs = c.n1 if paired else c.n1 * c.n2
    k, m = _symmetric_blocks(p, form)
    if not paired and k > 1:  # each block program: m examples' VJPs, m·m pairs' JVPs
        n_u, n_pairs = m, m * m
    vjp_bytes = c.itemsize * n_u * p_values
    jvp_bytes = c.itemsize * n_pairs * y_pass
    budget = p.option(VectorProductOptions).basis_bytes or BASIS_BYTES
    chunk = max(1, int(budget // max(vjp_bytes + jvp_bytes, 1)))
    return _Plan(form, chunk, vjp_bytes, jvp_bytes, float(budget))


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
        plan = _plan(p, sum_params, paired=False)
        kernels = _pair_kernels(f1, f2, p.params, p.axes, sum_params, plan)
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

        plan = _plan(p, sum_params, paired=mode != "grid")

        def pair(x1, kw1, x2, kw2, group=group, ex_axes=ex_axes, plan=plan):
            return _pair_kernels(
                lambda q: group(q, x1, kw1),
                lambda q: group(q, x2, kw2),
                p.params,
                ex_axes,
                sum_params,
                plan,
            )

        def grid(x1, kw1, x2, kw2, pair=pair):
            inner = jax.vmap(pair, in_axes=(None, None, xa2, ka2))
            return jax.vmap(inner, in_axes=(xa1, ka1, None, None))(x1, kw1, x2, kw2)

        k_blocks, _ = _symmetric_blocks(p, plan.form)
        if mode == "grid" and k_blocks > 1:
            out = _symmetric_grid(p, grid, ex_axes, plan.form)
        elif mode == "grid":
            out = grid(p.x1, p.kwargs1, x2, p.kwargs2)
        else:
            out = jax.vmap(pair, in_axes=(xa1, ka1, xa2, ka2))(p.x1, p.kwargs1, x2, p.kwargs2)
            if mode == "trace":
                out = jax.tree.map(lambda k: k.sum(0), out)
        for i, k in zip(ids, out):
            b = p.vmap.out_axes[i]
            k = jax.tree.map(lambda a, i=i, b=b, m=mode: _from_example_order(a, p.axes[i], b, m), k)
            results[i] = _layout(k, p.axes[i])
    return results


def _symmetric_blocks(p: Problem, form: str) -> tuple[int, int]:
    """``(k, m)``: the ``n`` examples in ``k`` blocks of ``m`` (``k·m >= n``) for the symmetric
    kernel of ``x2=None`` with ``vmap_axes``; ``(1, n)`` when it is not used.

    ``k = 2`` with the linearized JVP form (activations dominate: the JVPs saved outweigh the VJPs
    recomputed); with the transposed form (parameters dominate) each recomputed VJP writes ``P``
    values per column, and measured on an MLP the blocks did not pay, so ``k = 1``.
    """
    n = p.vmap.batch_size if p.vmap is not None else 1
    if p.vmap is None or p.x2 is not None or n < 2:
        return 1, n
    k = p.option(VectorProductOptions).blocks or (2 if form == "linearized" else 1)
    k = min(k, n)
    return k, -(-n // k)


def _take(tree: PyTree, axes: list, index: jax.Array) -> PyTree:
    """The examples ``index`` of ``tree`` along each leaf's vmap axis (``None``: shared)."""
    leaves, treedef = jax.tree.flatten(tree)
    taken = [a if ax is None else jnp.take(a, index, axis=ax) for a, ax in zip(leaves, axes)]
    return treedef.unflatten(taken)


def _symmetric_grid(p: Problem, grid: Callable, ex_axes: list[LeafAxes], form: str) -> Any:
    """``grid(x, kw, x, kw)`` (per-pair kernels with leading ``(n, n)`` pair axes) from the
    block pairs ``a <= b`` only.

    ``Θ(x, x)`` is symmetric: the kernel of the pair ``(j, i)`` is that of ``(i, j)`` with its
    ``x1`` and ``x2`` axes swapped. With ``k`` blocks of ``m`` examples, the ``k(k+1)/2`` blocks
    on and above the diagonal are computed (each ``m·o`` VJPs and ``m²·o`` JVPs, one program per
    block: measured, a ``lax.map`` over the blocks made XLA:CPU's convolutions 3× slower) and
    the rest are their transposes: ``(k+1)/(2k)`` of the ``n²·o`` JVPs for ``(k+1)/2`` times
    the ``n·o`` VJPs. Padded rows repeat the last example and are cut off.
    """
    k, m = _symmetric_blocks(p, form)
    n = p.vmap.batch_size
    rows = np.minimum(np.arange(k * m), n - 1).reshape(k, m)
    upper = [(a, b) for a in range(k) for b in range(a, k)]
    block_a = np.array([a for a, _ in upper])
    block_b = np.array([b for _, b in upper])

    def block(ab):
        ia, ib = rows[ab[0]], rows[ab[1]]
        xa, xb = _take(p.x1, p.vmap.x_axes, ia), _take(p.x1, p.vmap.x_axes, ib)
        kwa = {key: _take(v, p.vmap.kw_axes[key], ia) for key, v in p.kwargs1.items()}
        kwb = {key: _take(v, p.vmap.kw_axes[key], ib) for key, v in p.kwargs1.items()}
        return grid(xa, kwa, xb, kwb)

    blocks = [block(ab) for ab in upper]
    out = jax.tree.map(lambda *b: jnp.stack(b), *blocks)  # (pairs, m, m, ...) per leaf

    def assemble(blocks: jax.Array, axes: LeafAxes) -> jax.Array:
        nd, nf = len(axes.diagonal), len(axes.free)
        swap = [0, 2, 1, *range(3, 3 + nd)]
        swap += [*range(3 + nd + nf, 3 + nd + 2 * nf), *range(3 + nd, 3 + nd + nf)]
        full = jnp.zeros((k, k, m, m, *blocks.shape[3:]), blocks.dtype)
        full = full.at[block_b, block_a].set(blocks.transpose(swap))
        full = full.at[block_a, block_b].set(blocks)  # diagonal blocks as computed
        full = full.transpose(0, 2, 1, 3, *range(4, full.ndim))
        return full.reshape(k * m, k * m, *full.shape[4:])[:n, :n]

    return [jax.tree.map(lambda b, ax=ax: assemble(b, ax), o) for o, ax in zip(out, ex_axes)]


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
    axis is traced or diagonal), reading them; whole passes, at the matmul rate. For the
    symmetric kernel in ``k`` blocks of ``m`` examples, the ``k(k+1)/2`` blocks on and above the
    diagonal: ``k(k+1)/2·m`` examples' VJPs and ``k(k+1)/2·m²`` pairs' JVPs. Chunking the columns
    recomputes nothing."""
    out_axes = [None] * len(c.out2) if p.vmap is None else p.vmap.out_axes
    k, m = _symmetric_blocks(p, _form(p, c))
    pairs = k * (k + 1) // 2
    grid_pairs = c.n1 * c.n2 if k == 1 else pairs * m * m
    vjp_scale = 1.0 if k == 1 else pairs * m / c.n2
    jvps = 0.0
    for leaf_out2, ax, b in zip(c.out2, p.axes, out_axes):
        paired = b is not None and b in ax.trace + ax.diagonal
        jvps += (c.n1 if paired else grid_pairs) * leaf_out2 / c.n2
    v_values = sum(c.out2) * c.n_params * vjp_scale
    vjp = c.phase(vjp_scale * (1 + 2 * c.o2) * c.fp2, v_values + vjp_scale * c.o2 * c.y2, "pass")
    jvp = c.phase(jvps * 2 * c.fp1 / c.n1, v_values + jvps * c.y1 / c.n1, "pass")
    return vjp + jvp


NTK_VECTOR_PRODUCTS = NtkMethod("ntk_vector_products", _compute, _cost)
