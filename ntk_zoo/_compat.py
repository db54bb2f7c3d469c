"""The one module that touches JAX internals (``jax.extend.core``, ``jax.core``, ``jax._src``).

Everything else in ntk_zoo uses public JAX APIs and imports what it needs of the internals from
here, so that a JAX upgrade is mended in one place.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

try:
    from jax.extend import core as jex_core
except ImportError:  # a JAX without jax.extend.core: structured derivatives degrade (below)
    jex_core = None


class _Absent:
    """Stands in for an internal this JAX lacks: nothing is an instance of it."""


def _internal(name: str) -> Any:
    return getattr(jex_core, name, None) or _Absent


ClosedJaxpr = _internal("ClosedJaxpr")
DropVar = _internal("DropVar")
Jaxpr = _internal("Jaxpr")
JaxprEqn = _internal("JaxprEqn")
Literal = _internal("Literal")
Var = _internal("Var")
jaxpr_as_fun = _internal("jaxpr_as_fun")
# The internals structured derivatives (and jaxpr-based counts) need that this JAX lacks.
MISSING = tuple(
    name
    for name, value in [
        ("ClosedJaxpr", ClosedJaxpr),
        ("DropVar", DropVar),
        ("Jaxpr", Jaxpr),
        ("JaxprEqn", JaxprEqn),
        ("Literal", Literal),
        ("Var", Var),
        ("jaxpr_as_fun", jaxpr_as_fun),
    ]
    if value is _Absent
)


def unless_missing(method: Any, exact: Any) -> Any:
    """``method`` (an ``NtkMethod``) when this JAX has every internal it relies on, else one
    that computes by ``exact`` with a one-time warning and that ``auto`` never picks."""
    if not MISSING:
        return method
    warned = []

    def compute(problem: Any, sum_params: bool) -> list:
        if not warned:
            warned.append(True)
            warnings.warn(
                f"{method.name} needs JAX internals this JAX {jax.__version__} lacks "
                f"(jax.extend.core.{', '.join(MISSING)}); computing by {exact.name} instead "
                "(exact, slower)",
                RuntimeWarning,
                stacklevel=2,
            )
        return exact.compute(problem, sum_params)

    return method._replace(compute=compute, cost=lambda *a: float("inf"), traced_cost=None)


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


def index_leading(x: Any, index: Any) -> Any:
    """``x[index]`` along the leading axis: a ``dynamic_slice`` at ``index`` (a traced scalar
    integer, ``0 <= index < len(x)``: not normalised, and clamped into range as every
    ``dynamic_slice`` is) or a ``slice`` at ``index`` (an int; negative counts from the end,
    out of range raises ``IndexError``), then a ``squeeze``, each primitive bound directly. The
    equations of ``lax.dynamic_index_in_dim(..., allow_negative_indices=False)`` /
    ``lax.index_in_dim``, for about half their trace work (their argument checks and index
    conversions: ~300 against ~160 Python calls per row under ``make_jaxpr``), paid per layer
    and stacked leaf when a ``scan`` is unrolled."""
    lax = jax.lax
    if isinstance(index, int | np.integer):
        index = int(index) + (x.shape[0] if index < 0 else 0)
        if not 0 <= index < x.shape[0]:
            raise IndexError(f"index_leading: row {index} of an axis of size {x.shape[0]}.")
        starts = (index, *[0] * (x.ndim - 1))
        limits = (index + 1, *x.shape[1:])
        row = lax.slice_p.bind(x, start_indices=starts, limit_indices=limits, strides=None)
    else:
        zero = np.zeros((), index.dtype)
        row = lax.dynamic_slice_p.bind(
            x, index, *[zero] * (x.ndim - 1), slice_sizes=(1, *x.shape[1:])
        )
    return lax.squeeze_p.bind(row, dimensions=(0,))
