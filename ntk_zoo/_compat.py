"""The one module that touches JAX internals (``jax.extend.core``, ``jax.core``, ``jax._src``).

Everything else in ntk_zoo uses public JAX APIs and imports what it needs of the internals from
here, so that a JAX upgrade is mended in one place.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
from jax.extend import core as jex_core

ClosedJaxpr = jex_core.ClosedJaxpr
DropVar = jex_core.DropVar
Jaxpr = jex_core.Jaxpr
JaxprEqn = jex_core.JaxprEqn
Literal = jex_core.Literal
Var = jex_core.Var
jaxpr_as_fun = jex_core.jaxpr_as_fun


def is_tracer(x: Any) -> bool:
    """Whether ``x`` is an abstract value under a JAX transformation (no concrete data)."""
    return isinstance(x, jax.core.Tracer)


def _as_jaxpr(value: Any) -> Jaxpr | None:
    if isinstance(value, ClosedJaxpr):
        return value.jaxpr
    if isinstance(value, Jaxpr):
        return value
    return None


def sub_jaxprs(eqn: JaxprEqn) -> Iterator[tuple[Jaxpr, int]]:
    """The jaxprs nested in ``eqn``'s params, each with how often it runs per call of ``eqn``.

    ``scan`` bodies run ``length`` times; loop bodies of unknown trip count and ``cond``
    branches are counted once (an estimate, used only for costs).
    """
    times = int(eqn.params.get("length", 1)) if eqn.primitive.name == "scan" else 1
    for value in eqn.params.values():
        values = value if isinstance(value, tuple | list) else (value,)
        for v in values:
            jaxpr = _as_jaxpr(v)
            if jaxpr is not None:
                yield jaxpr, times


def iter_eqns(jaxpr: Jaxpr | ClosedJaxpr, times: int = 1) -> Iterator[tuple[JaxprEqn, int]]:
    """Every equation of ``jaxpr``, nested calls included, with its execution count."""
    jaxpr = _as_jaxpr(jaxpr)
    for eqn in jaxpr.eqns:
        subs = list(sub_jaxprs(eqn))
        if not subs:
            yield eqn, times
        for sub, k in subs:
            yield from iter_eqns(sub, times * k)


def bind_eqn(eqn: JaxprEqn, *args: Any) -> list:
    """Applies ``eqn``'s primitive, with its params, to ``args`` (eagerly, or in the current
    trace); always returns a list of results."""
    primitive = eqn.primitive
    outs = primitive.bind(*args, **primitive.get_bind_params(eqn.params))
    return list(outs) if primitive.multiple_results else [outs]


def threefry2x32(k1: Any, k2: Any, x1: Any, x2: Any) -> tuple[Any, Any]:
    """The Threefry-2x32 hash of the counter words ``(x1, x2)`` under the key ``(k1, k2)``: the
    primitive behind ``jax.random``'s default generator."""
    from jax.extend.random import threefry2x32_p

    return tuple(threefry2x32_p.bind(k1, k2, x1, x2))


def backend_started() -> bool:
    """Whether JAX has started a backend (after which ``XLA_FLAGS`` are no longer read)."""
    from jax._src import xla_bridge

    return bool(getattr(xla_bridge, "_backends", {}))
