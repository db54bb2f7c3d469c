"""The linearised program of ``f`` with respect to its params, flattened into a list of equations.

``jax.linearize`` gives a program linear in the param tangents whose nonlinearities are constants
(residuals of the primal pass). Nested calls (``jit``, ``closed_call``, ``remat``, custom
derivative calls) are inlined so that every equation touching a param is visible; control flow
(``scan``, ``cond``, ``while``) is expanded by :data:`EXPANDERS` (``_control_flow``) where it
can be, else stays one equation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from ntk_zoo import _compat

PyTree = Any

# Call-like primitives inlined, with the name of the param holding their body.
_CALLS = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "remat": "jaxpr",
    "remat2": "jaxpr",
    "checkpoint": "jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
}


# Control-flow primitives replaced by ordinary equations when they can be (``_control_flow``):
# expand(eqn, inputs, eqns, flatten) -> outputs, or None to keep the equation whole.
EXPANDERS: dict[str, Callable[..., list | None]] = {}


class Var:
    """A value of the flattened program: its shape and dtype."""

    __slots__ = ("dtype", "shape")

    def __init__(self, shape: tuple[int, ...], dtype: Any):
        self.shape = tuple(shape)
        self.dtype = dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        return f"Var{self.shape}"


@dataclasses.dataclass(frozen=True)
class Const:
    """A literal or residual operand."""

    value: Any

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(np.shape(self.value))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> Any:
        return jax.numpy.result_type(self.value)


Operand = Var | Const


@dataclasses.dataclass(eq=False)
class Eqn:
    primitive: Any
    inputs: list[Operand]
    outputs: list[Var]
    params: dict[str, Any]

    @property
    def name(self) -> str:
        return self.primitive.name

    def bind(self, *args: Any) -> list[Any]:
        out = self.primitive.bind(*args, **self.params)
        return list(out) if self.primitive.multiple_results else [out]


@dataclasses.dataclass
class Program:
    """A flat linear program: ``outputs = program(*inputs)``, linear in ``inputs``."""

    inputs: list[Var]
    eqns: list[Eqn]
    outputs: list[Operand]
    tangent: set[Var]  # every variable that depends on the inputs
    consts: dict[Var, Any]  # values of the variables that do not

    def consumers(self) -> dict[Var, list[tuple[Eqn, int]]]:
        out: dict[Var, list[tuple[Eqn, int]]] = {}
        for eqn in self.eqns:
            for i, v in enumerate(eqn.inputs):
                if isinstance(v, Var) and v in self.tangent:
                    out.setdefault(v, []).append((eqn, i))
        return out

    def value(self, operand: Operand) -> Any:
        """The value of an operand that does not depend on the inputs."""
        if isinstance(operand, Const):
            return operand.value
        return self.consts[operand]

    def evaluate(
        self,
        inputs: Sequence[Any],
        inject: dict[Eqn, Sequence[Any]] | None = None,
        extra_outputs: dict[Var, Any] | None = None,
    ) -> list[Any]:
        """Runs the linear part; ``inject[eqn]`` is added to the outputs of ``eqn``."""
        env: dict[Var, Any] = dict(zip(self.inputs, inputs))
        read = lambda v: env[v] if isinstance(v, Var) and v in env else self.value(v)
        for eqn in self.eqns:
            if not any(isinstance(v, Var) and v in self.tangent for v in eqn.inputs):
                continue
            outs = eqn.bind(*(read(v) for v in eqn.inputs))
            if inject is not None and eqn in inject:
                outs = [o if d is None else o + d for o, d in zip(outs, inject[eqn])]
            env.update(zip(eqn.outputs, outs))
        results = []
        for v in self.outputs:
            if isinstance(v, Var) and v in self.tangent:
                value = read(v)
            else:  # an output that does not depend on params: its tangent is zero
                value = jax.numpy.zeros_like(self.value(v))
            if extra_outputs is not None and isinstance(v, Var) and v in extra_outputs:
                value = value + extra_outputs[v]
            results.append(value)
        return results


def _flatten(jaxpr: Any, consts: Sequence[Any], args: Sequence[Operand], eqns: list[Eqn]) -> list:
    env: dict[Any, Operand] = {}
    for v, c in zip(jaxpr.constvars, consts):
        env[v] = Const(c)
    env.update(zip(jaxpr.invars, args))

    def read(v: Any) -> Operand:
        if isinstance(v, _compat.Literal):
            return Const(v.val)
        return env[v]

    for eqn in jaxpr.eqns:
        inputs = [read(v) for v in eqn.invars]
        body = eqn.params.get(_CALLS.get(eqn.primitive.name, ""))
        expand = EXPANDERS.get(eqn.primitive.name)
        outs = None if expand is None else expand(eqn, inputs, eqns, _flatten)
        if outs is not None:
            pass
        elif body is not None:
            if isinstance(body, _compat.ClosedJaxpr):
                inner, inner_consts = body.jaxpr, body.consts
            else:
                inner, inner_consts = body, ()
            outs = _flatten(inner, inner_consts, inputs, eqns)
        else:
            outs = [Var(v.aval.shape, v.aval.dtype) for v in eqn.outvars]
            eqns.append(Eqn(eqn.primitive, inputs, outs, dict(eqn.params)))
        for v, o in zip(eqn.outvars, outs):
            if not isinstance(v, _compat.DropVar):
                env[v] = o
    return [read(v) for v in jaxpr.outvars]


def linear_program(fn: Callable[[PyTree], PyTree], params: PyTree) -> tuple[PyTree, Program]:
    """``fn(params)`` and its linearisation in ``params`` as a flat :class:`Program`."""
    out, lin = jax.linearize(fn, params)
    return out, program_of(lin, params)


def program_of(fn: Callable[[PyTree], PyTree], params: PyTree) -> Program:
    """The flat :class:`Program` of a function ``fn`` that is linear in ``params``."""
    # Through a plain function: ``jit`` names the function it traces, and a ``jax.linearize``
    # result (a ``Partial`` over the linear jaxpr) has no code object, so its name would be
    # its ``str``: the whole linear program pretty-printed (3-4 ms on a 12-layer MLP).
    closed = jax.make_jaxpr(lambda p: fn(p))(params)
    inputs = [Var(v.aval.shape, v.aval.dtype) for v in closed.jaxpr.invars]
    eqns: list[Eqn] = []
    outputs = _flatten(closed.jaxpr, closed.consts, inputs, eqns)
    tangent = set(inputs)
    consts: dict[Var, Any] = {}
    live = []
    for eqn in eqns:
        if any(isinstance(v, Var) and v in tangent for v in eqn.inputs):
            tangent.update(eqn.outputs)
            live.append(eqn)
        else:  # residual arithmetic (e.g. recomputation inside remat): evaluate it once
            args = [v.value if isinstance(v, Const) else consts[v] for v in eqn.inputs]
            consts.update(zip(eqn.outputs, eqn.bind(*args)))
    return Program(inputs, live, outputs, tangent, consts)


def is_float(v: Var) -> bool:
    return jax.numpy.issubdtype(v.dtype, jax.numpy.inexact)


def zeros(v: Var) -> Any:
    return jax.numpy.zeros(v.shape, v.dtype)


def size(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64))
