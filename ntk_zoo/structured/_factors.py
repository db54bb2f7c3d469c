"""Recording the factors: ``∂f/∂y`` at every use of every param, and each use's structure.

``f``'s linearisation w.r.t. its params is flattened into equations (``_ir``, loops unrolled by
``_control_flow``, stacked params split into parts by ``_roots``); one transposed pass per basis
vector of the output space (``vmap``-ed) records the cotangent ``∂f/∂y`` at the output of every
equation that uses a param; each use's structure rule (``_registry``) gives the structured
factors of its ``∂y/∂w``. What is static about a use (which axes are traced, diagonal, mapped,
dense) is kept apart from its arrays, so that the factors can be recorded per example under
``vmap`` with the static description coming back once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ntk_zoo.core import Problem
from ntk_zoo.structured import _control_flow, _registry
from ntk_zoo.structured._ir import Eqn, Program, Var, is_float, linear_program, size, zeros
from ntk_zoo.structured._registry import NotTransposable
from ntk_zoo.structured._roots import roots as _roots
from ntk_zoo.structured._structure import Structure

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Use:
    """What is static about one use of a param: its structure without the arrays."""

    pullback: bool
    trace: tuple[tuple[int, int], ...] = ()
    maps: tuple[tuple[int, int], ...] = ()
    diag: tuple[tuple[int, int], ...] = ()
    dense_y: tuple[int, ...] = ()
    dense_w: tuple[int, ...] = ()
    index_w: tuple[int, ...] = ()
    has_d: bool = False
    has_src: bool = False
    kept_y: tuple[int, ...] = ()  # output axes of the use left in ∂f/∂y (broadcast ones summed)
    group: int = -1  # uses of one group have the same ∂f/∂y (see _cotangent_groups); -1: none
    y_ndim: int = 0
    # per output leaf, what the rule's own dense factor runs (``Structure.factor_cost``), or
    # None: priced as the einsum of the structure; () without a rule's factor
    factor_costs: tuple = ()


@dataclasses.dataclass(frozen=True)
class Leaf:
    shape: tuple[int, ...]  # the param in its root coordinates
    uses: tuple[Use, ...]
    scaled: bool = False  # the root is a scalar multiple of the param (LeafFactors.scale)
    owner: int = 0  # the param leaf this is (a part of: see ``_roots``)


class UseFactors(NamedTuple):
    """The arrays of one use (per example under ``vmap``).

    ``g``: ``∂f/∂y`` per output leaf (for a use without structure, a pullback, the use's whole
    Jacobian factor ``∂f/∂w``); ``d``, ``maps``, ``src``: the structure's dense block, its
    per-axis maps and its gather sources (:class:`Structure`); ``j``: per output leaf, the use's
    Jacobian factor ``∂f/∂y · ∂y/∂w`` by the primitive's own transpose, where it has one.

    The fields of these factors' tuples are in alphabetical order: the order in which ``vmap``
    returns them, and so the order of the traced program's equations, is the one the string-keyed
    dicts they replaced had (a dict's pytree is sorted by key), which keeps the compiled program,
    and its rounding, as it was.
    """

    d: jax.Array | None = None
    g: Sequence[jax.Array] | Mapping[int, jax.Array] = ()
    j: Sequence[jax.Array] | None = None
    maps: Sequence[jax.Array] = ()
    src: jax.Array | None = None


class LeafFactors(NamedTuple):
    scale: jax.Array | None  # the root is ``scale`` times the param (``Leaf.scaled``)
    uses: list[UseFactors]


class SideFactors(NamedTuple):
    """The factors of one side (``x1`` or ``x2``): per cotangent group (uses whose ``∂f/∂y``
    coincide, :func:`_cotangent_groups`) that ``∂f/∂y`` per output leaf, and per param leaf (or
    part)."""

    cts: list[list[jax.Array]]
    leaves: list[LeafFactors]


def transposing(fn: Callable, *args: Any) -> Any:
    """``fn(*args)``, with JAX's failures to transpose raised as :class:`NotTransposable`."""
    try:
        return fn(*args)
    except (ValueError, NotImplementedError, TypeError) as e:
        if "transpose" in str(e).lower() or "reverse-mode" in str(e).lower():
            raise NotTransposable(str(e)) from e
        raise


def side_factors(problem: Problem, x: PyTree, kw: dict) -> tuple[SideFactors, list[Leaf]]:
    """The factors of one side (``x1`` or ``x2``), per example under ``vmap`` when the problem
    has ``vmap_axes``."""
    if problem.vmap is None:
        return record(lambda p: problem.f(p, x, **kw), problem.params)

    def one(params, x, kw):
        return record(lambda p: problem.f_example(p, x, kw), params)

    x_axes, kw_axes = problem.vmap_in_axes(x, kw)
    return _vmap_with_static(one, (None, x_axes, kw_axes))(problem.params, x, kw)


def _vmap_with_static(fn: Callable, in_axes: tuple) -> Callable:
    """``jax.vmap`` of ``fn`` returning ``(arrays, static)``: ``static`` (Python metadata, the
    same for every example) comes back beside the batched arrays."""
    static: list = []

    def arrays_only(*args):
        arrays, meta = fn(*args)
        static.append(meta)
        return arrays

    def run(*args):
        return jax.vmap(arrays_only, in_axes=in_axes)(*args), static[-1]

    return run


def record(fn: Callable[[PyTree], PyTree], params: PyTree) -> tuple[SideFactors, list[Leaf]]:
    """The factors of ``fn`` at ``params``: per param leaf (or part, ``_roots``) and use, its
    arrays; per cotangent group, its ``∂f/∂y``; and the static description of each leaf's
    uses."""
    _, program = linear_program(_control_flow.unrolled(fn), params)
    parts, consumers = _roots(program)
    owners = [i for i, ps in enumerate(parts) for _ in ps]
    scaled_roots = [part for ps in parts for part in ps]
    roots = [r for r, _ in scaled_roots]
    eqns = _used_eqns(roots, consumers)
    ident = [r for r in dict.fromkeys(roots) if r in set(program.outputs)]
    cts = _output_cotangents(program, eqns, ident)
    cones = _cones(program, consumers)
    long = [max(cones.get(v, 0) for v in e.outputs) >= ONCE_CONE for e in eqns]
    cts = _computed_once(cts, long, _control_flow.param_key(params))
    out_shapes, _ = _output_shapes(program)
    chains = _cotangent_groups(program, eqns, consumers)
    # per variable, the first use equation whose output it is or reaches through adds of one
    # shape: that equation's recorded cotangent is the variable's
    first: dict[Var, Eqn] = {}
    for eqn in eqns:
        if eqn in chains:
            first.setdefault(chains[eqn].plain, eqn)
    position = {eqn: i for i, eqn in enumerate(eqns)}  # Eqn hashes by identity
    ys_cts_of = lambda eqn: [ys_ct[position[eqn]] for ys_ct, _ in cts]
    group_ids: dict[Var, int] = {}
    group_cts: list = []
    leaves, statics = [], []
    for owner, (root, scale) in zip(owners, scaled_roots):
        per_use, static = [], []
        for eqn, idx in consumers.get(root, []):
            chain = chains.get(eqn)
            rep = first[chain.plain] if chain else eqn  # the same arrays for one group
            arrays, use = _use_factors(program, eqn, idx, root, ys_cts_of(rep), out_shapes)
            if not use.pullback and chain:
                key = chain.plain
                # a use stretched on its way to a farther sum (a bias broadcast over the
                # examples) joins that sum's group where it keeps none of the stretched axes:
                # in the sum's coordinates they are broadcast axes of the use (summed from G)
                if chain.stretched and chain.far in first and not set(use.kept_y) & chain.stretched:
                    key = chain.far
                if key not in group_ids:
                    group_ids[key] = len(group_cts)
                    group_cts.append([ct[0] for ct in ys_cts_of(first[key])])
                use = dataclasses.replace(use, group=group_ids[key], y_ndim=eqn.outputs[0].ndim)
            per_use.append(arrays)
            static.append(use)
        if root in ident:
            k = ident.index(root)
            per_use.append(UseFactors(g=[zs_ct[k] for _, zs_ct in cts]))
            static.append(Use(pullback=True))
        scale = None if scale is None else jnp.asarray(scale, root.dtype)
        leaves.append(LeafFactors(scale=scale, uses=per_use))
        statics.append(Leaf(root.shape, tuple(static), scale is not None, owner))
    return SideFactors(cts=group_cts, leaves=leaves), statics


def _used_eqns(roots: list[Var], consumers: dict) -> list[Eqn]:
    """The equations that use a root, each once, in order of first use."""
    eqns: list[Eqn] = []
    for root in roots:
        for eqn, _ in consumers.get(root, []):
            if eqn not in eqns:
                eqns.append(eqn)
    return eqns


def _output_cotangents(program: Program, eqns: list[Eqn], ident: list[Var]) -> list[tuple]:
    """Per output leaf of shape ``s``, the cotangents ``(ys, zs)`` of every basis vector of the
    output space, pulled back to the outputs of ``eqns`` (``ys``) and to the roots that are
    outputs themselves (``zs``), each with the axes ``s`` first: one transposed pass per output.
    """

    def h(ys, zs):
        inputs = [zeros(v) for v in program.inputs]
        inject = {}
        for e, y in zip(eqns, ys):
            it = iter(y)
            inject[e] = [next(it) if is_float(v) else None for v in e.outputs]
        return program.evaluate(inputs, inject, dict(zip(ident, zs)))

    ys_structs = [
        [jax.ShapeDtypeStruct(v.shape, v.dtype) for v in e.outputs if is_float(v)] for e in eqns
    ]
    zs_structs = [jax.ShapeDtypeStruct(v.shape, v.dtype) for v in ident]
    transpose = jax.linear_transpose(h, ys_structs, zs_structs)
    out_shapes, out_dtypes = _output_shapes(program)
    cts = []
    for j, shape in enumerate(out_shapes):
        n = size(shape)

        def pull(e, j=j):
            outs = [jnp.zeros(s, d) for s, d in zip(out_shapes, out_dtypes)]
            outs[j] = e.reshape(out_shapes[j]).astype(out_dtypes[j])
            return transpose(outs)

        basis = jnp.eye(n, dtype=out_dtypes[j])
        ys_ct, zs_ct = transposing(jax.vmap(pull), basis)
        unflat = lambda a, shape=shape: a.reshape(*shape, *a.shape[1:])
        cts.append(jax.tree.map(unflat, (ys_ct, zs_ct)))
    return cts


_BOUNDARIES = ("dot_general", "conv_general_dilated")
# A use's cotangent whose elementwise cone (``_cones``) has at least this many equations is
# computed once into a buffer (``_computed_once``); smaller cones stay fused into their readers.
ONCE_CONE = 32


def _cones(program: Program, consumers: dict, cap: int = 1024) -> dict:
    """Per tangent variable, how many equations lie on its paths towards the outputs before a
    product (``dot_general``, ``conv_general_dilated``), counted once per path (so shared
    stretches count again; capped at ``cap``): the elementwise work that, in the transposed
    program, XLA fuses into every reader of its cotangent."""
    cone: dict = {}
    for eqn in reversed(program.eqns):
        for v in eqn.outputs:
            total = 0
            for c, _ in consumers.get(v, []):
                if c.name not in _BOUNDARIES:
                    total += 1 + max((cone.get(o, 0) for o in c.outputs), default=0)
            cone[v] = min(total, cap)
    return cone


def _computed_once(cts: list[tuple], long: list[bool], key: Any) -> list[tuple]:
    """``cts`` (per output leaf, the recorded cotangents ``∂f/∂y`` of each use equation, and of
    the roots that are outputs), those of the uses marked ``long`` each computed once into its
    own buffer for every einsum that reads it (:func:`_once`). ``key`` None (no numeric param):
    left as they are.

    Why: a cotangent is an elementwise function of earlier results (a residual stream's
    ``∂f/∂h`` adds every later block's contribution through layer norms' scalings, between the
    materialised products). XLA:CPU fuses such a chain into each of its readers, and every
    einsum reading a layer's cotangent (through a layout copy) recomputed the chain of every
    layer above it: on a 12-block transformer (width 64, N=4, 10 logits), 70% of structured
    derivatives' time went to those copies. A short chain (a ReLU's mask, a scale) is cheaper
    fused than written and read again, so only cones of at least :data:`ONCE_CONE`
    equations (:func:`_cones`) are computed once."""
    if key is None or not any(long):
        return cts
    bound = jnp.clip(lax.convert_element_type(key, jnp.int32), 0, 1)
    once = lambda a: _once(a, bound) if jnp.issubdtype(a.dtype, jnp.inexact) and a.size else a
    return [
        ([[once(a) for a in ys] if k else ys for ys, k in zip(ys_ct, long)], zs_ct)
        for ys_ct, zs_ct in cts
    ]


@jax.custom_jvp
def _once(a: jax.Array, bound: jax.Array) -> jax.Array:
    """``a``, carried through a ``while`` loop of ``bound`` (0 or 1, read from a param when the
    program runs, so XLA cannot drop the loop) iterations that add ``0 · i``: the same values
    (up to the sign of a zero), computed once into a buffer, as a loop's operands are not fused
    into it (``optimization_barrier`` is removed before XLA's fusion). Its derivative is the
    identity's (so that the kernel stays differentiable: a ``while`` has no transpose)."""

    def body(carry: tuple) -> tuple:
        i, v = carry
        return i + 1, v + lax.convert_element_type(i, v.dtype) * 0

    return lax.while_loop(lambda c: c[0] < bound, body, (jnp.int32(0), a))[1]


@_once.defjvp
def _once_jvp(primals: tuple, tangents: tuple) -> tuple:
    return _once(*primals), tangents[0]


def _output_shapes(program: Program) -> tuple[list[tuple[int, ...]], list[Any]]:
    out_vars = program.outputs
    shapes = [jnp.shape(program.value(v)) if not isinstance(v, Var) else v.shape for v in out_vars]
    dtypes = [v.dtype if isinstance(v, Var) else jnp.result_type(v.value) for v in out_vars]
    return shapes, dtypes


def _use_factors(
    program: Program, eqn: Eqn, idx: int, root: Var, ys_cts: list, out_shapes: list
) -> tuple[UseFactors, Use]:
    """One use of ``root`` (operand ``idx`` of ``eqn``): its arrays (``∂f/∂y`` per output leaf
    and the structure's factors) and what is static about it. ``ys_cts``: per output leaf, the
    cotangents of ``eqn``'s outputs."""
    args = [
        None if isinstance(v, Var) and v in program.tangent else program.value(v)
        for v in eqn.inputs
    ]
    s: Structure = transposing(_registry.structure, eqn, idx, args)
    if s.pullback is not None:
        g = []
        for ct, shape in zip(ys_cts, out_shapes):
            flat = [c.reshape(size(shape), *c.shape[len(shape) :]) for c in ct]
            a = transposing(jax.vmap(s.pullback), flat)
            g.append(a.reshape(*shape, *root.shape))
        return UseFactors(g=g), Use(pullback=True)
    y = eqn.outputs[0]
    used = sorted(s.y_axes_used)
    g = []
    for ct, shape in zip(ys_cts, out_shapes):
        c = ct[0]
        broadcast = tuple(len(shape) + a for a in range(y.ndim) if a not in used)
        g.append(c.sum(broadcast) if broadcast else c)
    # The use's Jacobian factor ∂f/∂y · ∂y/∂w, for when this leaf's uses are summed densely
    # (unused, XLA drops it): by the rule's own formulation where it gives one (a convolution's
    # kernel, rules/_linear_algebra.py), else by the primitive's own transpose (what Jacobian
    # contraction's VJP does).
    flat = lambda ct, shape: [c.reshape(size(shape), *c.shape[len(shape) :]) for c in ct]
    if s.factor is not None:
        j = [
            s.factor(flat(ct, shape)[0]).reshape(*shape, *root.shape)
            for ct, shape in zip(ys_cts, out_shapes)
        ]
    else:
        j = _transposed_factor(eqn, idx, args, ys_cts, out_shapes, root, flat)
    arrays = UseFactors(g=g, d=s.d, maps=[m for _, _, m in s.maps], src=s.src, j=j)
    costs = ()
    if s.factor is not None and s.factor_cost is not None:
        costs = tuple(s.factor_cost(size(shape)) for shape in out_shapes)
    static = Use(
        pullback=False,
        trace=s.trace,
        maps=tuple((a, b) for a, b, _ in s.maps),
        diag=s.diag,
        dense_y=s.dense_y,
        dense_w=s.dense_w,
        index_w=s.index_w,
        has_d=s.d is not None,
        has_src=s.src is not None,
        kept_y=tuple(used),
        factor_costs=costs,
    )
    return arrays, static


def _transposed_factor(eqn, idx, args, ys_cts, out_shapes, root, flat) -> list | None:
    """Per output leaf, the use's Jacobian factor by ``vmap`` of the primitive's transpose, or
    ``None`` where it has none (the dense factor is then the einsum of the use's structure)."""
    try:
        pullback = transposing(_registry.pullback, eqn, idx, args).pullback
        return [
            jax.vmap(pullback)(flat(ct, shape)).reshape(*shape, *root.shape)
            for ct, shape in zip(ys_cts, out_shapes)
        ]
    except (NotTransposable, ValueError, NotImplementedError, TypeError):
        return None


class Chain(NamedTuple):
    """Where a use's output ``y`` leads through sums: ``plain``, the variable reached through
    ``add``s of ``y``'s own shape (its cotangent is ``y``'s); ``far``, the one reached when an
    ``add`` may also stretch the sum along size-1 axes (``stretched``: those axes)."""

    plain: Var
    far: Var
    stretched: frozenset


def _cotangent_groups(program: Program, eqns: list[Eqn], consumers: dict) -> dict[Eqn, Chain]:
    """Per use equation with one float output ``y``, the variables ``z`` whose cotangent gives
    ``y``'s: ``y`` reaches ``z`` through a chain of ``add``s of its rank and dtype, each the only
    consumer of its operand (``z = y + b``: ``∂f/∂y = ∂f/∂z``, the bias broadcast apart). Uses
    with the same ``z`` (a dense layer's ``W`` and ``b``, a convolution's kernel and bias) share
    one ``∂f/∂y``, and so one cotangent Gram product ``(∂f/∂y)(x1)·(∂f/∂y)(x2)``. An ``add``
    that stretches ``y`` along size-1 axes (``x @ W + b[None]`` without ``vmap``) ends the
    plain chain; past it ``∂f/∂y`` is ``∂f/∂z`` summed over the stretched axes."""
    outputs = {v for v in program.outputs if isinstance(v, Var)}
    chains = {}
    for eqn in eqns:
        floats = [v for v in eqn.outputs if is_float(v)]
        if len(floats) != 1 or len(eqn.outputs) != 1:
            continue
        v = plain = floats[0]
        stretched: set[int] = set()
        while v not in outputs:
            users = consumers.get(v, [])
            if len(users) != 1:
                break
            nxt, _ = users[0]
            z = nxt.outputs[0]
            if nxt.name not in ("add", "add_any") or z.ndim != v.ndim or z.dtype != v.dtype:
                break
            if any(n not in (m, 1) for n, m in zip(v.shape, z.shape)):
                break
            stretched |= {a for a, (n, m) in enumerate(zip(v.shape, z.shape)) if n != m}
            v = z
            if not stretched:
                plain = v
        chains[eqn] = Chain(plain, v, frozenset(stretched))
    return chains
