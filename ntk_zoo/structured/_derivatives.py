"""The structured-derivatives NTK: ``∂f/∂y`` at every use of every param, contracted with each
use's structured ``∂y/∂w`` by one einsum per pair of uses (order chosen by cost).

For a param leaf ``w`` used by equations with outputs ``y_1..y_K``::

    Θ_w(x1, x2) = Σ_k Σ_l (∂f/∂y_k)(x1) (∂y_k/∂w)(x1) (∂y_l/∂w)(x2)ᵀ (∂f/∂y_l)(x2)ᵀ

Everything per example (``∂f/∂y``, the structure factors) is computed under ``vmap`` when
``vmap_axes`` is given; the einsums then run over all example pairs at once.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from ntk_zoo.core import LeafAxes, Problem, to_layout
from ntk_zoo.methods import jacobian_contraction
from ntk_zoo.structured import _registry
from ntk_zoo.structured._ir import Eqn, Program, Var, is_float, linear_program, size, zeros
from ntk_zoo.structured._plan import plan
from ntk_zoo.structured._structure import Structure, onehot
from ntk_zoo.structured._warnings import warn_once

PyTree = Any


@dataclasses.dataclass(frozen=True)
class _Use:
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


@dataclasses.dataclass(frozen=True)
class _Leaf:
    shape: tuple[int, ...]  # the param in its root coordinates
    uses: tuple[_Use, ...]
    scaled: bool = False  # the root is a scalar multiple of the param (factors carry "scale")


class NotTransposable(Exception):
    """``f``'s linearisation has a part JAX cannot transpose (e.g. a dynamic ``while_loop``)."""


def _transposing(fn: Callable, *args: Any) -> Any:
    try:
        return fn(*args)
    except (ValueError, NotImplementedError, TypeError) as e:
        if "transpose" in str(e).lower() or "reverse-mode" in str(e).lower():
            raise NotTransposable(str(e)) from e
        raise


def _scalar_factor(program: Program, eqn: Eqn, idx: int) -> Any | None:
    """``c`` when ``eqn`` computes ``c · w`` (``w`` its operand ``idx``) for a scalar ``c``."""
    if eqn.name in ("mul", "div") and len(eqn.inputs) == 2:
        other = eqn.inputs[1 - idx]
        if other.ndim == 0 and not (isinstance(other, Var) and other in program.tangent):
            if eqn.name == "mul":
                return program.value(other)
            if idx == 0:
                return 1 / program.value(other)
    return None


def _roots(program: Program) -> tuple[list[tuple[Var, Any]], dict]:
    """Per param, the variable its uses are expressed in, and the scalar relating the two.

    A param reaching its uses only through bijections of its elements (reshape, transpose,
    sign, dtype) and scalings (``w / sqrt(fan_in)`` of the NTK parameterisation) is re-expressed
    in the coordinates of the last one: ``J_w = c · J_root`` up to a permutation, so
    ``Θ_w = c1 · c2 · J_root(x1) J_root(x2)ᵀ``.
    """
    consumers = program.consumers()
    outputs = {v for v in program.outputs if isinstance(v, Var)}
    roots = []
    for v in program.inputs:
        scale = None
        while v not in outputs:
            users = consumers.get(v, [])
            if len(users) != 1:
                break
            eqn, idx = users[0]
            c = _scalar_factor(program, eqn, idx)
            if c is not None:
                scale = c if scale is None else scale * c
            elif eqn.name not in _registry.VIEWS:
                break
            elif eqn.name == "reshape" and eqn.params.get("dimensions") is not None:
                break
            v = eqn.outputs[0]
        roots.append((v, scale))
    return roots, consumers


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
        ys_ct, zs_ct = _transposing(jax.vmap(pull), basis)
        unflat = lambda a, shape=shape: a.reshape(*shape, *a.shape[1:])
        cts.append(jax.tree.map(unflat, (ys_ct, zs_ct)))
    return cts


def _output_shapes(program: Program) -> tuple[list[tuple[int, ...]], list[Any]]:
    out_vars = program.outputs
    shapes = [jnp.shape(program.value(v)) if not isinstance(v, Var) else v.shape for v in out_vars]
    dtypes = [v.dtype if isinstance(v, Var) else jnp.result_type(v.value) for v in out_vars]
    return shapes, dtypes


def _use_factor(
    program: Program, eqn: Eqn, idx: int, root: Var, ys_cts: list, out_shapes: list
) -> tuple[dict, _Use]:
    """One use of ``root`` (operand ``idx`` of ``eqn``): its arrays (``∂f/∂y`` per output leaf
    and the structure's factors) and what is static about it. ``ys_cts``: per output leaf, the
    cotangents of ``eqn``'s outputs."""
    args = [
        None if isinstance(v, Var) and v in program.tangent else program.value(v)
        for v in eqn.inputs
    ]
    s: Structure = _transposing(_registry.structure, eqn, idx, args)
    if s.pullback is not None:
        g = []
        for ct, shape in zip(ys_cts, out_shapes):
            flat = [c.reshape(size(shape), *c.shape[len(shape) :]) for c in ct]
            a = _transposing(jax.vmap(s.pullback), flat)
            g.append(a.reshape(*shape, *root.shape))
        return {"g": g}, _Use(pullback=True)
    y = eqn.outputs[0]
    used = sorted(s.y_axes_used)
    g = []
    for ct, shape in zip(ys_cts, out_shapes):
        c = ct[0]
        broadcast = tuple(len(shape) + a for a in range(y.ndim) if a not in used)
        g.append(c.sum(broadcast) if broadcast else c)
    arrays = {"g": g, "d": s.d, "maps": [m for _, _, m in s.maps], "src": s.src}
    static = _Use(
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
    )
    return arrays, static


def _factors(fn: Callable[[PyTree], PyTree], params: PyTree) -> tuple[list, list[_Leaf]]:
    """Per param leaf, per use, the arrays ``{"g": [per output leaf], "d", "maps", "src"}``
    (and the leaf's ``"scale"``), and the static description of each leaf's uses."""
    _, program = linear_program(fn, params)
    scaled_roots, consumers = _roots(program)
    roots = [r for r, _ in scaled_roots]
    eqns = _used_eqns(roots, consumers)
    ident = [r for r in dict.fromkeys(roots) if r in set(program.outputs)]
    cts = _output_cotangents(program, eqns, ident)
    out_shapes, _ = _output_shapes(program)
    leaves, statics = [], []
    for root, scale in scaled_roots:
        per_use, static = [], []
        for eqn, idx in consumers.get(root, []):
            ys_cts = [ys_ct[eqns.index(eqn)] for ys_ct, _ in cts]
            arrays, use = _use_factor(program, eqn, idx, root, ys_cts, out_shapes)
            per_use.append(arrays)
            static.append(use)
        if root in ident:
            k = ident.index(root)
            per_use.append({"g": [zs_ct[k] for _, zs_ct in cts]})
            static.append(_Use(pullback=True))
        scale = None if scale is None else jnp.asarray(scale, root.dtype)
        leaves.append({"uses": per_use, "scale": scale})
        statics.append(_Leaf(root.shape, tuple(static), scale is not None))
    return leaves, statics


class _Labels:
    def __init__(self):
        self._ids: dict[Any, int] = {}

    def __call__(self, key: Any) -> int:
        return self._ids.setdefault(key, len(self._ids))


def _side_operands(
    use: _Use, arrays: dict, j: int, key: tuple, batch: list, outs: list, w_ndim: int, lab: _Labels
) -> list:
    """Operands ``(array, labels)`` of one side of one use, for output leaf ``j``."""
    w = lambda b: lab(("w", b))
    if use.pullback:
        return [(arrays["g"][j], batch + outs + [w(b) for b in range(w_ndim)])]
    y_label = {a: w(b) for a, b in use.trace + use.diag}
    y_label |= {a: lab(("y", *key, a)) for a in use.kept_y if a not in y_label}
    ops = [(arrays["g"][j], batch + outs + [y_label[a] for a in use.kept_y])]
    for (a, b), m in zip(use.maps, arrays["maps"]):
        ops.append((m, [*batch, y_label[a], w(b)]))
    if use.has_d:
        d_labels = [y_label[a] for a in use.dense_y] + [w(b) for _, b in use.diag]
        ops.append((arrays["d"], batch + d_labels + [w(b) for b in use.dense_w]))
    return ops


def _contract(
    leaf: _Leaf,
    f1: list,
    f2: list,
    j: int,
    axes: LeafAxes,
    batch_axis: int | None,
    lab: _Labels,
    einsum: Callable,
) -> jax.Array:
    """The kernel of one param leaf for output leaf ``j``, in canonical order (unscaled)."""
    side_labels = []
    for side in (1, 2):
        labels = {}
        for k in range(axes.ndim):
            if k in axes.trace or k in axes.diagonal:
                labels[k] = lab(("o", k))
            else:
                labels[k] = lab(("o", side, k))
        side_labels.append(labels)
    out = [side_labels[0][k] for k in axes.diagonal]
    out += [side_labels[0][k] for k in axes.free] + [side_labels[1][k] for k in axes.free]
    per_example = [k for k in range(axes.ndim) if k != batch_axis]
    total = None
    scales = []
    if leaf.scaled:
        for side, f in ((1, f1), (2, f2)):
            labels = side_labels[side - 1]
            batch = [] if batch_axis is None else [labels[batch_axis]]
            scales.append((f["scale"], batch))
    f1, f2 = f1["uses"], f2["uses"]
    for (u, use1), (v, use2) in itertools.product(enumerate(leaf.uses), repeat=2):
        operands = list(scales)
        sides = [1, 2][: len(scales)]
        srcs = []
        for side, (x, use, arrays) in enumerate(((u, use1, f1[u]), (v, use2, f2[v])), start=1):
            labels = side_labels[side - 1]
            batch = [] if batch_axis is None else [labels[batch_axis]]
            outs = [labels[k] for k in per_example]
            ops = _side_operands(use, arrays, j, (side, x), batch, outs, len(leaf.shape), lab)
            operands += ops
            sides += [side] * len(ops)
            if use.has_src:
                ylabels = [lab(("y", side, x, a)) for a in use.dense_y]
                srcs.append((arrays["src"], batch, ylabels, use, side))
        if len(srcs) == 2 and srcs[0][3].index_w == srcs[1][3].index_w:
            operands.append(_gram(srcs[0][:3], srcs[1][:3]))
            sides.append(0)  # both sides
        else:
            for src, batch, ylabels, use, side in srcs:
                sides.append(side)
                block = onehot(src, [leaf.shape[b] for b in use.index_w])
                operands.append((block, batch + ylabels + [lab(("w", b)) for b in use.index_w]))
        args = []
        for arr, labels in operands:
            args += [arr, labels]
        term = einsum(*args, out, sides=tuple(sides))
        total = term if total is None else total + term
    return total


def _gram(side1: tuple, side2: tuple) -> tuple[jax.Array, list]:
    """``E[..1, ..2] = [src1 == src2 > 0]``: which output pairs read the same param element."""
    (s1, b1, y1), (s2, b2, y2) = side1, side2
    shared = b1 == b2
    lead = len(b1)
    if shared:  # one batch axis for both sides (examples paired 1:1)
        a = s1.reshape(s1.shape + (1,) * len(y2))
        b = s2.reshape(s2.shape[:lead] + (1,) * len(y1) + s2.shape[lead:])
        labels = b1 + y1 + y2
    else:
        a = s1.reshape(s1.shape + (1,) * (len(b2) + len(y2)))
        b = s2.reshape((1,) * (len(b1) + len(y1)) + s2.shape)
        labels = b1 + y1 + b2 + y2
    return ((a == b) & (a > 0)).astype(jnp.float32), labels


def _einsum(*args: Any, sides: tuple[int, ...] = ()) -> jax.Array:
    """``jnp.einsum`` along the path of least estimated time (``_plan``)."""
    operands, subs, out = args[:-1:2], args[1:-1:2], args[-1]
    path, _ = plan(
        tuple(tuple(s) for s in subs),
        tuple(tuple(o.shape) for o in operands),
        tuple(out),
        jnp.dtype(operands[0].dtype).itemsize,
    )
    return jnp.einsum(*args, optimize=path, precision=lax.Precision.HIGHEST)


def structured_derivatives(problem: Problem, einsum: Callable = _einsum) -> list:
    """Per output leaf, a param-tree of that leaf's unscaled kernel contributions.

    ``einsum(*operands_and_sublists, out_sublist)`` runs each contraction (the cost model passes
    one that only counts). A program JAX cannot transpose (a ``while_loop`` with a dynamic trip
    count) falls back, exactly, to forward-mode Jacobian contraction with a one-time warning.
    """
    try:
        return _structured(problem, einsum)
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


def _side_factors(problem: Problem, x: PyTree, kw: dict) -> tuple[list, list[_Leaf]]:
    """The factors of one side (``x1`` or ``x2``), per example under ``vmap`` when the problem
    has ``vmap_axes``."""
    if problem.vmap is None:
        return _factors(lambda p: problem.f(p, x, **kw), problem.params)

    def one(params, x, kw):
        return _factors(lambda p: problem.f_example(p, x, kw), params)

    x_axes, kw_axes = problem.vmap_in_axes(x, kw)
    return _vmap_with_static(one, (None, x_axes, kw_axes))(problem.params, x, kw)


def _structured(problem: Problem, einsum: Callable) -> list:
    f1, leaves = _side_factors(problem, problem.x1, problem.kwargs1)
    f2 = f1 if problem.x2 is None else _side_factors(problem, problem.x2, problem.kwargs2)[0]
    param_def = jax.tree.structure(problem.params)
    out = []
    for j, axes in enumerate(problem.axes):
        batch_axis = None if problem.vmap is None else problem.vmap.out_axes[j]
        shape = _kernel_canonical_shape(problem, j, axes)
        kernels = []
        for leaf, a1, a2 in zip(leaves, f1, f2):
            k = None
            if leaf.uses:
                k = _contract(leaf, a1, a2, j, axes, batch_axis, _Labels(), einsum)
            k = jnp.zeros(shape, problem.dtype) if k is None else k.astype(problem.dtype)
            kernels.append(to_layout(k, axes))
        out.append(jax.tree.unflatten(param_def, kernels))
    return out


def _kernel_canonical_shape(problem: Problem, j: int, axes: LeafAxes) -> tuple[int, ...]:
    s1 = jax.tree.leaves(problem.fx1)[j].shape
    s2 = jax.tree.leaves(problem.fx2)[j].shape
    return (
        tuple(s1[k] for k in axes.diagonal)
        + tuple(s1[k] for k in axes.free)
        + tuple(s2[k] for k in axes.free)
    )
