"""The structured-derivatives NTK: ``∂f/∂y`` at every use of every param, contracted with each
use's structured ``∂y/∂w`` by one einsum per pair of uses (order chosen by cost).

For a param leaf ``w`` used by equations with outputs ``y_1..y_K``::

    Θ_w(x1, x2) = Σ_k Σ_l (∂f/∂y_k)(x1) (∂y_k/∂w)(x1) (∂y_l/∂w)(x2)ᵀ (∂f/∂y_l)(x2)ᵀ

Per leaf, the uses are contracted one of two exact ways, chosen by estimated cost (``_plan``):
through their structure, one einsum per pair ``(k, l)``; or summed first into the leaf's
per-example Jacobian factor ``J_w = Σ_k (∂f/∂y_k)(∂y_k/∂w)`` (Jacobian contraction's arithmetic
for that leaf, in the same program), contracted once as ``J_w(x1) J_w(x2)ᵀ``. A mix is allowed:
the summed uses act as one more use without structure. Uses without structure (pullbacks) are
always summed first, so a leaf with K of them costs one contraction, not K². On a tie the
Jacobian product is taken (the same arithmetic, by the primitive's own transpose).

Uses whose ``∂f/∂y`` coincide (``y = x W`` read only by ``z = y + b``: a dense layer's ``W`` and
``b``, a convolution's kernel and bias, two products summed) share one ``∂f/∂y`` array and, where
it is cheaper, one cotangent Gram ``Σ (∂f/∂y)(x1)(∂f/∂y)(x2)`` over the output axes they all pair
with a param axis, which each use then contracts with its own structure; every leaf's kernel
stays separate (``sum_params=False``).

Everything per example (``∂f/∂y``, the structure factors) is computed under ``vmap`` when
``vmap_axes`` is given; the einsums then run over all example pairs at once.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from ntk_zoo.core import LeafAxes, Problem, to_layout
from ntk_zoo.methods import jacobian_contraction
from ntk_zoo.structured import _control_flow, _registry
from ntk_zoo.structured._ir import Eqn, Program, Var, is_float, linear_program, size, zeros
from ntk_zoo.structured._options import StructuredOptions
from ntk_zoo.structured._plan import plan, timed_steps
from ntk_zoo.structured._registry import NotTransposable
from ntk_zoo.structured._roots import roots as _roots
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
    group: int = -1  # uses of one group have the same ∂f/∂y (see _cotangent_groups); -1: none
    y_ndim: int = 0


@dataclasses.dataclass(frozen=True)
class _Leaf:
    shape: tuple[int, ...]  # the param in its root coordinates
    uses: tuple[_Use, ...]
    scaled: bool = False  # the root is a scalar multiple of the param (factors carry "scale")
    owner: int = 0  # the param leaf this is (a part of: see ``_roots``)


def _transposing(fn: Callable, *args: Any) -> Any:
    try:
        return fn(*args)
    except (ValueError, NotImplementedError, TypeError) as e:
        if "transpose" in str(e).lower() or "reverse-mode" in str(e).lower():
            raise NotTransposable(str(e)) from e
        raise


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
    # The use's Jacobian factor ∂f/∂y · ∂y/∂w by the primitive's own transpose (what Jacobian
    # contraction's VJP does), for when this leaf's uses are summed densely; unused, XLA drops it.
    try:
        pullback = _transposing(_registry.pullback, eqn, idx, args).pullback
        arrays["j"] = [
            jax.vmap(pullback)(
                [c.reshape(size(shape), *c.shape[len(shape) :]) for c in ct]
            ).reshape(*shape, *root.shape)
            for ct, shape in zip(ys_cts, out_shapes)
        ]
    except (NotTransposable, ValueError, NotImplementedError, TypeError):
        pass  # the dense factor is then the einsum of the use's structure
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


def _cotangent_groups(program: Program, eqns: list[Eqn], consumers: dict) -> dict[Eqn, Var]:
    """Per use equation with one float output ``y``, the variable ``z`` whose cotangent ``y``'s
    equals: ``y`` reaches ``z`` through a chain of ``add``s of its own shape and dtype, each the
    only consumer of its operand (``z = y + b``: ``∂f/∂y = ∂f/∂z``, the bias broadcast apart).
    Uses with the same ``z`` (a dense layer's ``W`` and ``b``, a convolution's kernel and bias)
    share one ``∂f/∂y``, and so one cotangent Gram product ``(∂f/∂y)(x1)·(∂f/∂y)(x2)``."""
    outputs = {v for v in program.outputs if isinstance(v, Var)}
    keys = {}
    for eqn in eqns:
        floats = [v for v in eqn.outputs if is_float(v)]
        if len(floats) != 1 or len(eqn.outputs) != 1:
            continue
        v = floats[0]
        while v not in outputs:
            users = consumers.get(v, [])
            if len(users) != 1:
                break
            nxt, _ = users[0]
            z = nxt.outputs[0]
            if nxt.name not in ("add", "add_any") or z.shape != v.shape or z.dtype != v.dtype:
                break
            v = z
        keys[eqn] = v
    return keys


def _factors(fn: Callable[[PyTree], PyTree], params: PyTree) -> tuple[dict, list[_Leaf]]:
    """Per param leaf, per use, the arrays ``{"g": [per output leaf], "d", "maps", "src"}``
    (and the leaf's ``"scale"``) under ``"leaves"``; per cotangent group (uses whose ``∂f/∂y``
    coincide), that ``∂f/∂y`` per output leaf under ``"cts"``; and the static description of
    each leaf's uses."""
    _, program = linear_program(_control_flow.unrolled(fn), params)
    parts, consumers = _roots(program)
    owners = [i for i, ps in enumerate(parts) for _ in ps]
    scaled_roots = [part for ps in parts for part in ps]
    roots = [r for r, _ in scaled_roots]
    eqns = _used_eqns(roots, consumers)
    ident = [r for r in dict.fromkeys(roots) if r in set(program.outputs)]
    cts = _output_cotangents(program, eqns, ident)
    out_shapes, _ = _output_shapes(program)
    keys = _cotangent_groups(program, eqns, consumers)
    first: dict[Var, Eqn] = {}
    for eqn in eqns:
        if eqn in keys:
            first.setdefault(keys[eqn], eqn)
    group_ids: dict[Var, int] = {}
    group_cts: list = []
    leaves, statics = [], []
    for owner, (root, scale) in zip(owners, scaled_roots):
        per_use, static = [], []
        for eqn, idx in consumers.get(root, []):
            rep = first[keys[eqn]] if eqn in keys else eqn  # the same arrays for one group
            ys_cts = [ys_ct[eqns.index(rep)] for ys_ct, _ in cts]
            arrays, use = _use_factor(program, eqn, idx, root, ys_cts, out_shapes)
            if not use.pullback and eqn in keys:
                if keys[eqn] not in group_ids:
                    group_ids[keys[eqn]] = len(group_cts)
                    group_cts.append([ct[0] for ct in ys_cts])
                gid = group_ids[keys[eqn]]
                use = dataclasses.replace(use, group=gid, y_ndim=eqn.outputs[0].ndim)
            per_use.append(arrays)
            static.append(use)
        if root in ident:
            k = ident.index(root)
            per_use.append({"g": [zs_ct[k] for _, zs_ct in cts]})
            static.append(_Use(pullback=True))
        scale = None if scale is None else jnp.asarray(scale, root.dtype)
        leaves.append({"uses": per_use, "scale": scale})
        statics.append(_Leaf(root.shape, tuple(static), scale is not None, owner))
    return {"leaves": leaves, "cts": group_cts}, statics


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


class _Sides:
    """The operands of one param leaf, output leaf ``j``: per side and use, and the pair
    einsums that combine them."""

    def __init__(self, leaf, f1, f2, j, axes, batch_axis, lab):
        self.leaf, self.j, self.lab = leaf, j, lab
        self.same = f2 is f1
        self.arrays = (f1["uses"], f2["uses"])
        self.labels = []
        for side in (1, 2):
            labels = {}
            for k in range(axes.ndim):
                if k in axes.trace or k in axes.diagonal:
                    labels[k] = lab(("o", k))
                else:
                    labels[k] = lab(("o", side, k))
            self.labels.append(labels)
        first, second = self.labels
        self.out = [first[k] for k in axes.diagonal]
        self.out += [first[k] for k in axes.free] + [second[k] for k in axes.free]
        self.per_example = [k for k in range(axes.ndim) if k != batch_axis]
        self.batch = [[] if batch_axis is None else [ls[batch_axis]] for ls in self.labels]
        self.traced = {first[k] for k in axes.trace if k != batch_axis}
        self.scales = []
        if leaf.scaled:
            self.scales = [(f1["scale"], self.batch[0]), (f2["scale"], self.batch[1])]

    def w_labels(self) -> list[int]:
        return [self.lab(("w", b)) for b in range(len(self.leaf.shape))]

    def dense_labels(self, side: int) -> list[int]:
        """The labels of a use's Jacobian factor ``J = ∂f/∂y · ∂y/∂w``: examples, outputs, w."""
        outs = [self.labels[side - 1][k] for k in self.per_example]
        return self.batch[side - 1] + outs + self.w_labels()

    def side(self, side: int, key: Any, use: _Use, arrays: dict) -> tuple[list, tuple | None]:
        """One side's operands of one use (``key`` names the use) and its gather, if any."""
        batch = self.batch[side - 1]
        outs = [self.labels[side - 1][k] for k in self.per_example]
        ops = _side_operands(
            use, arrays, self.j, (side, key), batch, outs, len(self.leaf.shape), self.lab
        )
        src = None
        if use.has_src:
            ylabels = [self.lab(("y", side, key, a)) for a in use.dense_y]
            src = (arrays["src"], batch, ylabels, use)
        return ops, src

    def dense_spec(self, side: int, u: int) -> tuple[list, list] | None:
        """The einsum giving use ``u``'s Jacobian factor on ``side``, or None when the use's
        operands do not name every param axis (it then stays structured)."""
        use, arrays = self.leaf.uses[u], self.arrays[side - 1][u]
        ops, src = self.side(side, ("dense", u), use, arrays)
        if src is not None:
            block = onehot(src[0], [self.leaf.shape[b] for b in use.index_w])
            ops.append((block, src[1] + src[2] + [self.lab(("w", b)) for b in use.index_w]))
        out = self.dense_labels(side)
        if not set(out) <= {label for _, labels in ops for label in labels}:
            return None
        return ops, out

    def gram_labels(self, ys: tuple[dict, dict], shared: frozenset, y_ndim: int) -> list[int]:
        """The labels of a cotangent Gram ``Σ_shared (∂f/∂y)(x1)(∂f/∂y)(x2)``: the output axes
        of both sides (those the kernel traces summed), then the unshared ``y`` axes of side 1
        and of side 2, labelled by ``ys`` (per side, ``y`` axis -> label)."""
        outs = []
        for k in (0, 1):
            outs += self.batch[k]
            outs += [self.labels[k][i] for i in self.per_example]
        outs = [x for x in dict.fromkeys(outs) if x not in self.traced]
        return outs + [y[a] for y in ys for a in range(y_ndim) if a not in shared]

    def gram_spec(self, cts: tuple, shared: frozenset) -> tuple[list, list[int], list[int]]:
        """The einsum of one group's cotangent Gram (operands, sides, output labels)."""
        y_ndim = cts[0].ndim - len(self.batch[0]) - len(self.per_example)
        ys = tuple(
            {a: self.lab(("G", a) if a in shared else ("Gy", k, a)) for a in range(y_ndim)}
            for k in (1, 2)
        )
        ops = [
            (ct, self.batch[k] + [self.labels[k][i] for i in self.per_example] + list(y.values()))
            for k, (ct, y) in enumerate(zip(cts, ys))
        ]
        return ops, [1, 2], self.gram_labels(ys, shared, y_ndim)

    def use_y_labels(self, side: int, key: Any, use: _Use) -> dict:
        """Per output axis of ``use``, its label in the use's einsums (``_side_operands``);
        a broadcast axis gets a label of its own (summed)."""
        y_label = {a: self.lab(("w", b)) for a, b in use.trace + use.diag}
        for a in range(use.y_ndim):
            if a not in y_label:
                name = "y" if a in use.kept_y else "bcast"
                y_label[a] = self.lab((name, side, key, a))
        return y_label

    def pair_spec(self, one: tuple, two: tuple, gram: tuple | None = None) -> tuple[list, list]:
        """Operands and sides of the einsum of ``one`` (side 1) with ``two`` (side 2), each
        ``(key, use, arrays)``. With ``gram = (G, shared)`` (the two uses' group's cotangent
        Gram, see :func:`_shared_grams`), ``G`` replaces both sides' ``∂f/∂y``."""
        operands = list(self.scales)
        sides = [1, 2][: len(self.scales)]
        srcs = []
        if gram is not None:
            g, shared = gram
            ys = tuple(
                self.use_y_labels(side, key, use) for side, (key, use, _) in ((1, one), (2, two))
            )
            operands.append((g, self.gram_labels(ys, shared, one[1].y_ndim)))
            sides.append(0)  # both sides
        for side, (key, use, arrays) in ((1, one), (2, two)):
            ops, src = self.side(side, key, use, arrays)
            if gram is not None:
                ops = ops[1:]  # ∂f/∂y is in the Gram
            operands += ops
            sides += [side] * len(ops)
            if src is not None:
                srcs.append((*src, side))
        if len(srcs) == 2 and srcs[0][3].index_w == srcs[1][3].index_w:
            operands.append(_gram(srcs[0][:3], srcs[1][:3]))
            sides.append(0)  # both sides
        else:
            for src, batch, ylabels, use, side in srcs:
                sides.append(side)
                block = onehot(src, [self.leaf.shape[b] for b in use.index_w])
                operands.append(
                    (block, batch + ylabels + [self.lab(("w", b)) for b in use.index_w])
                )
        return operands, sides


def _spec_cost(operands: list, out: list[int], sides: list[int] = (), same: bool = False) -> float:
    """The estimated seconds of an einsum on its planned path (``_plan``, on the active cost
    table). With ``same`` (``x2=None``: both sides' operands are the same arrays) a step that
    involves side 2 only repeats side 1's and is computed once (XLA merges them), so it is not
    counted again."""
    subs = tuple(tuple(labels) for _, labels in operands)
    shapes = tuple(tuple(a.shape) for a, _ in operands)
    itemsize = jnp.dtype(operands[0][0].dtype).itemsize
    path, total = plan(subs, shapes, tuple(out), itemsize)
    if not same or not sides:
        return total
    sizes = {label: n for sub, shape in zip(subs, shapes) for label, n in zip(sub, shape)}
    owners = [{x} if x else {1, 2} for x in sides]
    total = 0.0
    for i, j, seconds in timed_steps(path, subs, tuple(out), sizes, itemsize):
        merged = owners[i] | owners[j]
        owners = [*owners[:i], *owners[i + 1 : j], *owners[j + 1 :], merged]
        if merged != {2}:
            total += seconds
    return total


def _run(einsum: Callable, operands: list, out: list[int], sides: tuple) -> jax.Array:
    args = []
    for arr, labels in operands:
        args += [arr, labels]
    return einsum(*args, out, sides=tuple(sides))


def _choose_dense(s: _Sides, mode: str) -> tuple[list[int], dict]:
    """The uses whose Jacobian factors are summed into one dense factor per side (a pseudo-use
    contracted like any other), and the dense einsums of side 1 (reused to size side 2).

    ``structured``: none (one einsum per pair of uses). ``jacobian``: every use (the leaf's
    per-example Jacobian product, Jacobian contraction's arithmetic for this leaf). ``auto``:
    uses that have no structure (pullbacks) always, since summing before contracting is exact
    and never costs more; of the others, the subset of least estimated cost — per use, its
    dense factor (once per side) against its pair einsums with every other use — on a tie the
    largest such subset if the dense factor is small, else the smallest (``_TIE``).
    """
    uses = s.leaf.uses
    if mode == "structured":
        return [], {}
    specs = {u: s.dense_spec(1, u) for u, use in enumerate(uses) if not use.pullback}
    able = [u for u, spec in specs.items() if spec is not None]
    pull = [u for u, use in enumerate(uses) if use.pullback]
    if mode == "jacobian":
        return sorted(pull + able), specs
    kept = [u for u in range(len(uses)) if u not in pull]  # candidates to keep structured
    a1 = s.arrays[0]
    if not able and not pull:
        dense_struct = None
    else:
        dense_struct = jax.ShapeDtypeStruct(
            _dense_shape(s, uses, a1, pull, specs, able), a1[0]["g"][s.j].dtype
        )
    pseudo = ("dense", _Use(pullback=True), {"g": {s.j: dense_struct}})
    real = lambda u, side: (u, uses[u], s.arrays[side - 1][u])
    pair = {}
    cost = lambda spec: _spec_cost(spec[0], s.out, spec[1], s.same)
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
    one = {u: per_side * _spec_cost(*specs[u]) for u in able}

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
    return sorted(pull + list(best)), specs


def _dense_shape(s: _Sides, uses, a1, pull, specs, able) -> tuple[int, ...]:
    if pull:
        return tuple(a1[pull[0]]["g"][s.j].shape)
    ops, out = specs[able[0]]
    sizes = {label: n for arr, labels in ops for label, n in zip(labels, arr.shape)}
    return tuple(sizes[label] for label in out)


def _shared_grams(
    sides: list, dense: list, cts1: list, cts2: list, einsum: Callable, mode: str
) -> dict:
    """Per contracted leaf, ``{use: (G, shared axes)}`` for the uses whose diagonal pair einsum
    starts from their group's cotangent Gram ``G`` (:func:`_cotangent_groups`).

    A group's uses (across leaves, kept structured) have the same ``∂f/∂y``; their pair einsums
    each contain the product of the two sides' ``∂f/∂y`` over the ``y`` axes that every use of
    the group pairs with a param axis (a dense layer's output features for ``W`` and ``b``).
    ``G`` is that product, computed once; each use then contracts it with its own structure
    (``W``: the inputs' Gram; ``b``: a sum over the broadcast axes). ``auto``: a group computes
    ``G`` when its cost plus each use's cheaper of (its own einsum, from ``G``) is below the uses'
    own einsums, by estimated cost; ``always``: every group with a kept use; ``never``
    (``mode``: :attr:`StructuredOptions.grams`).
    """
    members: dict[int, list] = {}
    for i, s in enumerate(sides):
        if s is None:
            continue
        for u, use in enumerate(s.leaf.uses):
            if use.group >= 0 and u not in dense[i][0]:
                members.setdefault(use.group, []).append((i, u))
    out: dict[int, dict] = {}
    if mode == "never":
        return out
    for gid, group in members.items():
        if len(group) < 2 and mode != "always":
            continue
        traces = {(i, u): frozenset(a for a, _ in sides[i].leaf.uses[u].trace) for i, u in group}
        shared = frozenset.intersection(*traces.values())
        # in G, a y axis is either summed (shared) or kept once per side: the uses whose every
        # param-paired y axis is shared (no diagonal pairs) take it
        group = [
            (i, u) for i, u in group if traces[i, u] == shared and not sides[i].leaf.uses[u].diag
        ]
        if not group or (len(group) < 2 and mode != "always"):
            continue
        s0 = sides[group[0][0]]
        cts = (cts1[gid][s0.j], cts2[gid][s0.j])
        gops, gsides, gout = s0.gram_spec(cts, shared)
        struct = jax.ShapeDtypeStruct(tuple(_sizes(gops)[label] for label in gout), cts[0].dtype)
        chosen = []
        saving = 0.0
        for i, u in group:
            s, use = sides[i], sides[i].leaf.uses[u]
            one, two = (u, use, s.arrays[0][u]), (u, use, s.arrays[1][u])
            own_ops, own_sides = s.pair_spec(one, two)
            own = _spec_cost(own_ops, s.out, own_sides, s.same) if mode == "auto" else 0.0
            from_g = s.pair_spec(one, two, (struct, shared))
            via = _spec_cost(from_g[0], s.out, from_g[1], s.same) if mode == "auto" else -1.0
            if via < own:
                chosen.append((i, u))
                saving += own - via
        if not chosen or (mode == "auto" and _spec_cost(gops, gout, gsides, s0.same) >= saving):
            continue
        g = _run(einsum, gops, gout, tuple(gsides))
        for i, u in chosen:
            out.setdefault(i, {})[u] = (g, shared)
    return out


def _sizes(operands: list) -> dict[int, int]:
    return {label: n for arr, labels in operands for label, n in zip(labels, arr.shape)}


def _contract(s: _Sides, dense: list[int], specs: dict, grams: dict, einsum: Callable) -> Any:
    """The kernel of one param leaf for output leaf ``s.j``, in canonical order (unscaled).

    The uses chosen by :func:`_choose_dense` are first summed into one Jacobian factor per side
    ``J = Σ_u ∂f/∂y_u · ∂y_u/∂w`` (a pseudo-use without structure); then one einsum per pair of
    the remaining uses and that pseudo-use, a use's pair with itself starting from its group's
    cotangent Gram when ``grams`` has one for it (:func:`_shared_grams`).
    """
    leaf, j = s.leaf, s.j
    entries = [(u, leaf.uses[u], s.arrays[0][u], s.arrays[1][u]) for u in range(len(leaf.uses))]
    entries = [e for e in entries if e[0] not in dense]
    if dense:
        factors = []
        for side in (1, 2) if not s.same else (1,):
            total = None
            for u in dense:
                if leaf.uses[u].pullback:
                    term = s.arrays[side - 1][u]["g"][j]
                else:
                    arrays = s.arrays[side - 1][u]
                    count = getattr(einsum, "count", None)  # the cost model's einsum
                    ops, out = specs[u] if side == 1 else s.dense_spec(2, u)
                    if "j" in arrays and (einsum is _einsum or count is not None):
                        term = arrays["j"][j]
                        if count is not None:  # priced as the FLOPs of the use's einsum
                            _run(count, ops, out, (side,) * len(ops))
                    else:
                        term = _run(einsum, ops, out, (side,) * len(ops))
                total = term if total is None else total + term
            factors.append({"g": {j: total}})
        if s.same:
            factors.append(factors[0])
        entries.append(("dense", _Use(pullback=True), *factors))
    total = None
    for (u, use1, a1, _), (v, use2, _, a2) in itertools.product(entries, repeat=2):
        gram = grams.get(u) if u == v else None
        operands, sides = s.pair_spec((u, use1, a1), (v, use2, a2), gram)
        term = _run(einsum, operands, s.out, sides)
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

    ``einsum(*operands_and_sublists, out_sublist, sides=...)`` runs each contraction; the cost
    model passes one that prices each call (and runs it, or returns zeros when only estimating)
    and has a ``count`` method (same signature, prices only): a use's Jacobian factor, formed
    by the primitive's own transpose, is then priced as the einsum of the use's structure.
    The problem's :class:`StructuredOptions` say how the uses of each param leaf are
    contracted (``uses``: through their structure, summed into the leaf's Jacobian factor, or
    the cheaper mix per leaf; ``grams``: whether uses with one ``∂f/∂y`` share its Gram); all are
    exact. A program JAX cannot transpose (a
    ``while_loop`` with a dynamic trip count) falls back, exactly, to forward-mode Jacobian
    contraction with a one-time warning.
    """
    try:
        return _structured(problem, einsum, problem.option(StructuredOptions))
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


def _structured(problem: Problem, einsum: Callable, options: StructuredOptions) -> list:
    f1, leaves = _side_factors(problem, problem.x1, problem.kwargs1)
    f2 = f1 if problem.x2 is None else _side_factors(problem, problem.x2, problem.kwargs2)[0]
    param_def = jax.tree.structure(problem.params)
    out = []
    for j, axes in enumerate(problem.axes):
        batch_axis = None if problem.vmap is None else problem.vmap.out_axes[j]
        shape = _kernel_canonical_shape(problem, j, axes)
        sides = [
            _Sides(leaf, a1, a2, j, axes, batch_axis, _Labels()) if leaf.uses else None
            for leaf, a1, a2 in zip(leaves, f1["leaves"], f2["leaves"])
        ]
        dense = [None if s is None else _choose_dense(s, options.uses) for s in sides]
        grams = _shared_grams(sides, dense, f1["cts"], f2["cts"], einsum, options.grams)
        per_leaf: list = [None] * param_def.num_leaves  # a leaf's parts summed (``_roots``)
        for i, s in enumerate(sides):
            if s is not None:
                k = _contract(s, *dense[i], grams.get(i, {}), einsum)
                owner = leaves[i].owner
                per_leaf[owner] = k if per_leaf[owner] is None else per_leaf[owner] + k
        kernels = []
        for k in per_leaf:
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
