"""Control flow of the linearised program as structure: loops unrolled, branches as selections.

The flattening of ``_ir`` asks :data:`EXPANDERS` to replace a control-flow equation by ordinary
equations, so that every use of a param inside a loop body or a branch is visible to the
structure rules:

* ``scan`` is unrolled: iteration ``i`` reads slice ``i`` of each scanned operand (``xs``), the
  broadcast operands (``consts``) as they are, and the previous iteration's carry; the per-step
  outputs are stacked back. A param scanned over (a layer stack) is then read through disjoint
  static slices, one per layer, which ``_roots`` turns into one part per layer (each part's
  uses get their own structure, and the leaf's kernel is the sum over its parts: the parts are
  disjoint sets of the leaf's elements, so there are no cross terms). A broadcast param (a shared
  RNN weight) has one use per iteration, contracted like any weight used several times.
  ``reverse``, ``length`` and ``unroll`` follow ``scan``'s own semantics (``unroll`` changes
  nothing but the schedule).
* ``while`` whose trip count is fixed at trace time (its condition reads only carries that the
  body advances from concrete values, e.g. a counter from ``0`` to a literal bound) is unrolled
  that many times; otherwise it stays one equation (its transpose fails and structured
  derivatives fall back, exactly, with a one-time warning that names it).
* ``cond`` / ``switch``: with a concrete branch index the taken branch is inlined; with an
  index known only when the program runs (under ``jit`` or ``vmap``), every branch is inlined and
  each output is ``select_n(index, *branch outputs)``, whose rule is a 0/1 diagonal: exact, the
  untaken branches' contributions multiplied by zero.

Unrolling stops at :data:`UNROLL_LIMIT` equations per loop (the structured program's size and
compile time grow with it); a longer loop stays one equation, with a one-time warning.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

from ntk_zoo import _compat
from ntk_zoo.structured._ir import _CALLS, EXPANDERS, Const, Eqn, Operand
from ntk_zoo.structured._registry import NotTransposable, register
from ntk_zoo.structured._structure import Structure
from ntk_zoo.structured._warnings import warn_once

# Flattens ``jaxpr`` (with its consts) applied to operands, appending equations; returns outputs.
Flatten = Callable[[Any, Sequence[Any], Sequence[Operand], list[Eqn]], list[Operand]]

# Calls whose body is not inlined when unrolling the primal: their derivative is their own rule.
_KEPT_CALLS = ("custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr")
UNROLL_LIMIT = 50_000  # equations a loop may unroll into (iterations × equations of its body)


def _body_size(jaxpr: Any) -> int:
    return sum(1 for _ in _compat.iter_eqns(jaxpr))


def _too_long(kind: str, iterations: int, body: Any) -> bool:
    size = iterations * _body_size(body)
    if size <= UNROLL_LIMIT:
        return False
    warn_once(
        ("unroll limit", kind),
        f"structured_derivatives: a `{kind}` of {iterations} iterations would unroll into "
        f"{size} equations (more than the limit of {UNROLL_LIMIT}); it is kept as one equation "
        "and its params' contributions are computed exactly from its transpose (dense).",
        stacklevel=7,
    )
    return True


@functools.lru_cache(maxsize=1024)
def _traced(fn: Callable, structs: tuple) -> Any:
    return jax.make_jaxpr(fn)(*structs)


def _emit(fn: Callable, operands: Sequence[Operand], eqns: list[Eqn], flatten: Flatten) -> list:
    """``fn(*operands)`` (a function returning a list) as equations of the program; operands
    that are all constants are computed directly."""
    if all(isinstance(o, Const) for o in operands):
        return [Const(v) for v in fn(*(o.value for o in operands))]
    structs = tuple(jax.ShapeDtypeStruct(o.shape, o.dtype) for o in operands)
    closed = _traced(fn, structs)
    return flatten(closed.jaxpr, closed.consts, list(operands), eqns)


@functools.lru_cache(maxsize=1024)
def _index_fn(i: int) -> Callable:
    return lambda x: [lax.index_in_dim(x, i, 0, keepdims=False)]


def _stack(*ys: Any) -> list:
    return [lax.concatenate([lax.expand_dims(y, (0,)) for y in ys], 0)]


def _select(index: Any, *cases: Any) -> list:
    return [lax.select_n(index, *cases)]


def _scan(eqn: Any, inputs: list[Operand], eqns: list[Eqn], flatten: Flatten) -> list | None:
    p = eqn.params
    length, n_consts, n_carry = int(p["length"]), p["num_consts"], p["num_carry"]
    body = p["jaxpr"]
    if _too_long("scan", length, body.jaxpr):
        return None
    consts = inputs[:n_consts]
    carry = inputs[n_consts : n_consts + n_carry]
    xs = inputs[n_consts + n_carry :]
    per_step: list = [None] * length
    for i in reversed(range(length)) if p["reverse"] else range(length):
        x_i = [_emit(_index_fn(i), [x], eqns, flatten)[0] for x in xs]
        outs = flatten(body.jaxpr, body.consts, [*consts, *carry, *x_i], eqns)
        carry, per_step[i] = outs[:n_carry], outs[n_carry:]
    ys_avals = [v.aval for v in eqn.outvars[n_carry:]]
    if length == 0:
        ys = [Const(jnp.zeros(a.shape, a.dtype)) for a in ys_avals]
    else:
        stacked = lambda k: _emit(_stack, [s[k] for s in per_step], eqns, flatten)[0]
        ys = [stacked(k) for k in range(len(ys_avals))]
    return [*carry, *ys]


def _needed(jaxpr: Any, outputs: Sequence[int]) -> tuple[list, set]:
    """The equations of ``jaxpr`` that its ``outputs`` (positions) depend on, and the variables
    they read (the invars among them are what those outputs depend on)."""
    need = {v for k in outputs if not isinstance(v := jaxpr.outvars[k], _compat.Literal)}
    kept = []
    for e in reversed(jaxpr.eqns):
        if any(not isinstance(o, _compat.DropVar) and o in need for o in e.outvars):
            kept.append(e)
            need |= {v for v in e.invars if not isinstance(v, _compat.Literal)}
    return kept[::-1], need


def _concrete(o: Operand) -> bool:
    return isinstance(o, Const) and not _compat.is_tracer(o.value)


def _values(operands: Sequence[Operand]) -> list:
    """The concrete values of ``operands`` (``None`` for the others: never read)."""
    return [o.value if _concrete(o) else None for o in operands]


def _run(jaxpr: Any, consts: Sequence, kept: list, env: dict, outputs: Sequence[int]) -> list:
    env = dict(env) | dict(zip(jaxpr.constvars, consts))
    read = lambda v: v.val if isinstance(v, _compat.Literal) else env[v]
    for e in kept:
        outs = _compat.bind_eqn(e, *(read(v) for v in e.invars))
        env.update(zip(e.outvars, outs))
    return [read(jaxpr.outvars[k]) for k in outputs]


def _trip_count(p: dict, inputs: list[Operand]) -> int | None:
    """How many times the ``while`` runs, when that is fixed at trace time; else ``None``."""
    cond, body = p["cond_jaxpr"], p["body_jaxpr"]
    n_cc, n_bc = p["cond_nconsts"], p["body_nconsts"]
    cond_consts, body_consts = inputs[:n_cc], inputs[n_cc : n_cc + n_bc]
    init = inputs[n_cc + n_bc :]
    _, cond_reads = _needed(cond.jaxpr, [0])
    carries = {k for k, v in enumerate(cond.jaxpr.invars[n_cc:]) if v in cond_reads}
    while True:  # the carries the condition depends on, through any number of iterations
        kept, reads = _needed(body.jaxpr, sorted(carries))
        more = {k for k, v in enumerate(body.jaxpr.invars[n_bc:]) if v in reads} | carries
        if more == carries:
            break
        carries = more
    used_cc = [o for o, v in zip(cond_consts, cond.jaxpr.invars) if v in cond_reads]
    used_bc = [o for o, v in zip(body_consts, body.jaxpr.invars) if v in reads]
    if not all(_concrete(o) for o in [*used_cc, *used_bc, *(init[k] for k in carries)]):
        return None
    order = sorted(carries)
    cond_kept, _ = _needed(cond.jaxpr, [0])
    values = {k: init[k].value for k in order}
    count, limit = 0, UNROLL_LIMIT // max(1, _body_size(body.jaxpr)) + 1
    with jax.ensure_compile_time_eval():
        while True:
            env = dict(zip(cond.jaxpr.invars, _values(cond_consts)))
            env |= {cond.jaxpr.invars[n_cc + k]: values[k] for k in order}
            if not bool(np.asarray(_run(cond.jaxpr, cond.consts, cond_kept, env, [0])[0])):
                return count
            count += 1
            if count > limit:
                return count  # too long: the caller's limit then keeps the loop whole
            env = dict(zip(body.jaxpr.invars, _values(body_consts)))
            env |= {body.jaxpr.invars[n_bc + k]: values[k] for k in order}
            values = dict(zip(order, _run(body.jaxpr, body.consts, kept, env, order)))


def _while(eqn: Any, inputs: list[Operand], eqns: list[Eqn], flatten: Flatten) -> list | None:
    p = eqn.params
    count = _trip_count(p, inputs)
    body = p["body_jaxpr"]
    if count is None or _too_long("while_loop", count, body.jaxpr):
        return None
    n_bc = p["body_nconsts"]
    body_consts = inputs[p["cond_nconsts"] : p["cond_nconsts"] + n_bc]
    carry = inputs[p["cond_nconsts"] + n_bc :]
    for _ in range(count):
        carry = flatten(body.jaxpr, body.consts, [*body_consts, *carry], eqns)
    return carry


def _cond(eqn: Any, inputs: list[Operand], eqns: list[Eqn], flatten: Flatten) -> list | None:
    index, operands = inputs[0], inputs[1:]
    branches = eqn.params["branches"]
    if _concrete(index):
        taken = branches[int(np.clip(np.asarray(index.value), 0, len(branches) - 1))]
        return flatten(taken.jaxpr, taken.consts, operands, eqns)
    outs = [flatten(b.jaxpr, b.consts, operands, eqns) for b in branches]
    return [_emit(_select, [index, *cases], eqns, flatten)[0] for cases in zip(*outs)]


@register("while")
def dynamic_while(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    """A ``while`` left whole (its trip count is not known at trace time) has no transpose: the
    kernel is then computed by forward-mode Jacobian contraction (exact, with a warning)."""
    raise NotTransposable(
        "a `while_loop` whose trip count is not known at trace time (it depends on the inputs "
        "or on traced values; use `lax.fori_loop` with constant bounds, or `lax.scan`)"
    )


EXPANDERS.update(scan=_scan, cond=_cond)
EXPANDERS["while"] = _while


def _has_scan(jaxpr: Any) -> bool:
    jaxpr = jaxpr.jaxpr if isinstance(jaxpr, _compat.ClosedJaxpr) else jaxpr
    return any(
        e.primitive.name == "scan" or any(_has_scan(sub) for sub, _ in _compat.sub_jaxprs(e))
        for e in jaxpr.eqns
    )


def _evaluate(
    jaxpr: Any, consts: Sequence[Any], args: Sequence[Any], indices: _Indices | None
) -> list:
    """Evaluates ``jaxpr`` (in the current trace) with every ``scan`` it holds unrolled, also
    inside the calls it inlines (``jit``, ``remat``: the calls that hold a scan). ``indices``:
    the opaque iteration indices (:class:`_Indices`), ``None`` for static slices."""
    env = dict(zip(jaxpr.constvars, consts)) | dict(zip(jaxpr.invars, args))
    read = lambda v: v.val if isinstance(v, _compat.Literal) else env[v]
    for eqn in jaxpr.eqns:
        vals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        body = eqn.params.get(_CALLS.get(name, ""))
        if name == "scan" and not _too_long("scan", int(eqn.params["length"]), eqn.params["jaxpr"]):
            outs = _unrolled_scan(eqn, vals, indices)
        elif body is not None and name not in _KEPT_CALLS and _has_scan(body):
            inner = body.jaxpr if isinstance(body, _compat.ClosedJaxpr) else body
            inner_consts = body.consts if isinstance(body, _compat.ClosedJaxpr) else ()
            outs = _evaluate(inner, inner_consts, vals, indices)
        else:
            outs = _compat.bind_eqn(eqn, *vals)
        for v, o in zip(eqn.outvars, outs):
            if not isinstance(v, _compat.DropVar):
                env[v] = o
    return [read(v) for v in jaxpr.outvars]


def param_key(params: Any) -> Any:
    """An element of a param (see :func:`_key`), or None."""
    return _key(jax.tree.leaves(params))


def _key(leaves: Sequence[Any]) -> Any:
    """An element of a param: a value known only when the program runs, and the same for every
    example under ``vmap`` (the params are not batched); ``None`` if no param is a non-empty
    array of numbers (the slices are then static)."""
    numeric = lambda a: any(jnp.issubdtype(jnp.result_type(a), t) for t in (jnp.number, bool))
    leaf = next((a for a in leaves if numeric(a) and jnp.size(a)), None)
    if leaf is None:
        return None
    flat = lax.reshape(lax.stop_gradient(jnp.asarray(leaf)), (int(np.size(leaf)),))
    return _compat.index_leading(flat, 0)


class _Indices:
    """The integers ``0 .. n-1`` as values XLA cannot see through, for a scan of length ``n``:
    the outputs of one ``sort`` keyed by ``key`` (a runtime value broadcast to both keys), whose
    rows are the constants ``[-1, i]``; a stable sort of equal keys keeps every row as it is, so
    ``row[1]`` is ``i`` exactly. (An ``optimization_barrier`` would not do: XLA:CPU removes it
    and folds the constant. Rows ``[i, i]`` would do too, but XLA turns each such constant into
    a broadcast, one more kernel and ``n`` more instructions.) One sort per length, shared by
    every scan of that length (a nested scan's every outer iteration). See :func:`_unstack`."""

    def __init__(self, key: Any):
        self.key, self.made = key, {}

    def __call__(self, length: int) -> tuple:
        if length not in self.made:
            keys = lax.broadcast_in_dim(self.key, (2,), ())
            rows = [np.array([-1, i], np.int32) for i in range(length)]
            outs = lax.sort((keys, *rows), num_keys=1, is_stable=True)[1:]
            # not ``r[1]``: numpy-style indexing costs ~3x the trace work
            self.made[length] = tuple(_compat.index_leading(r, 1) for r in outs)
        return self.made[length]


@jax.custom_jvp
def _unstack(xs: tuple, indices: tuple) -> tuple:
    """Per iteration ``i``, ``x[i]`` of each of ``xs`` for the primal: a ``dynamic_slice`` at
    ``indices[i]`` (``== i``, opaque to XLA), so that the fusions of every iteration read their
    slice through an operand, are identical, and XLA:CPU compiles each kernel once, as for the
    unrolled model's per-layer params (a static slice fused into them made one distinct kernel
    per iteration). Their tangents are the static slices ``t[i]`` that ``_roots`` splits a
    stacked param by. One call for the whole scan: its derivative rule is traced once, not once
    per iteration."""
    return tuple(tuple(_compat.index_leading(x, index) for x in xs) for index in indices)


def _unstack_jvp(primals: tuple, tangents: tuple) -> tuple:
    (xs, indices), (ts, _) = primals, tangents
    outs = _unstack(xs, indices)

    def tangent(t: Any, i: int) -> Any:
        if isinstance(t, SymbolicZero):  # an input without tangent
            return SymbolicZero(t.aval.update(shape=t.aval.shape[1:]))
        return _compat.index_leading(t, i)

    return outs, tuple(tuple(tangent(t, i) for t in ts) for i in range(len(indices)))


_unstack.defjvp(_unstack_jvp, symbolic_zeros=True)


def _unrolled_scan(eqn: Any, vals: list, indices: _Indices | None) -> list:
    p = eqn.params
    length, n_consts, n_carry = int(p["length"]), p["num_consts"], p["num_carry"]
    body = p["jaxpr"]
    consts, carry = vals[:n_consts], vals[n_consts : n_consts + n_carry]
    xs = vals[n_consts + n_carry :]
    if indices is not None and xs and length:
        sliced = _unstack(tuple(xs), indices(length))
    else:
        sliced = [[_compat.index_leading(x, i) for x in xs] for i in range(length)]
    per_step: list = [None] * length
    for i in reversed(range(length)) if p["reverse"] else range(length):
        outs = _evaluate(body.jaxpr, body.consts, [*consts, *carry, *sliced[i]], indices)
        carry, per_step[i] = outs[:n_carry], outs[n_carry:]
    ys = []
    for k, v in enumerate(eqn.outvars[n_carry:]):
        if length == 0:
            ys.append(jnp.zeros(v.aval.shape, v.aval.dtype))
        else:
            ys.append(jnp.stack([s[k] for s in per_step]))
    return [*carry, *ys]


def unrolled(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``fn`` with the ``scan``s of its program unrolled (the same values), so that its
    linearisation is the unrolled model's: the primal pass keeps no stacked residuals, and the
    structured program compiles like the unrolled model's (each iteration reads its slices at
    an index XLA cannot see, :func:`_unstack`, so its kernels are the same as every other
    iteration's). Without scans, the program is replayed as it is: ``fn`` (a framework's model
    code) is traced once, not twice."""

    def run(params: Any) -> Any:
        closed, shape = jax.make_jaxpr(fn, return_shape=True)(params)
        leaves = jax.tree.leaves(params)
        key = _key(leaves) if _has_scan(closed.jaxpr) else None
        indices = None if key is None else _Indices(key)
        outs = _evaluate(closed.jaxpr, closed.consts, leaves, indices)
        return jax.tree.unflatten(jax.tree.structure(shape), outs)

    return run
