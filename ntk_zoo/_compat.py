"""The one module that touches JAX internals (``jax.extend.core``, ``jax.core``).

Everything else in ntk_zoo uses public JAX APIs and imports what it needs of the internals from
here, so that a JAX upgrade is mended in one place.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import jax
import jaxlib
from jax.extend import core as jex_core

ClosedJaxpr = jex_core.ClosedJaxpr
DropVar = jex_core.DropVar
Jaxpr = jex_core.Jaxpr
JaxprEqn = jex_core.JaxprEqn
Literal = jex_core.Literal
Var = jex_core.Var


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


# XLA:CPU in jaxlib 0.10 fuses some float32 dots into YNNPACK kernels that miscompile the
# reverse-mode derivative of transformer blocks with many outputs: ``jax.jit(jax.jacrev(f))``
# of the ViT in benchmarks/bench_models.py with 100 logits differs from the eager result by up
# to 60% (tests/test_xla_workaround.py). Turning those fusions off restores exact results.
_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type="


def _backend_started() -> bool:
    from jax._src import xla_bridge

    return bool(getattr(xla_bridge, "_backends", {}))


def avoid_cpu_miscompilation() -> bool:
    """Sets ``XLA_FLAGS`` to turn off XLA:CPU's YNNPACK fusions before JAX starts its backend.

    Returns whether the flag is in effect. The user's own choice of that flag is kept; on
    jaxlib older than 0.10 (no such fusions, and XLA aborts on unknown flags) nothing is done.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in flags:
        return True
    if tuple(int(v) for v in jaxlib.__version__.split(".")[:2]) < (0, 10):
        return False
    if _backend_started():
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {_YNN_FLAG}".strip()
    return True


def warn_if_cpu_exposed() -> None:
    """Warns once when the workaround came too late (JAX's CPU backend already running)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in flags or not _backend_started():
        return
    if tuple(int(v) for v in jaxlib.__version__.split(".")[:2]) < (0, 10):
        return
    if jax.default_backend() != "cpu":
        return
    import warnings

    warnings.warn(
        "JAX's CPU backend started before ntk_zoo was imported, so ntk_zoo could not turn off "
        "XLA:CPU's YNNPACK fusions, which can miscompile float32 reverse-mode derivatives "
        "(wrong kernels). Import ntk_zoo before running any JAX computation, or set "
        "XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= in the environment.",
        stacklevel=3,
    )
