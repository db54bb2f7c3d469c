"""The one place ntk_zoo sets an XLA flag; ``ntk_zoo/__init__.py`` calls it first thing.

XLA:CPU in jaxlib 0.10 fuses some float32 dots into YNNPACK kernels that miscompile the
reverse-mode derivative of transformer blocks with many outputs: ``jax.jit(jax.jacrev(f))`` of
the ViT in benchmarks/bench_models.py with 100 logits differs from the eager result by up to 60%
(tests/test_xla_workaround.py). Turning those fusions off restores exact results. XLA reads
``XLA_FLAGS`` once, when JAX starts its backend, so the flag is set at import, before any JAX
computation; when the backend already runs on CPU, a warning says the kernels may be wrong and
how to set the flag by hand. A user's own setting of that flag is always kept.
"""

from __future__ import annotations

import os
import warnings

import jax
import jaxlib

from ntk_zoo._compat import backend_started

_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type="


def _has_ynn_fusions() -> bool:
    """jaxlib 0.10 and later (older XLA has no such fusions and aborts on unknown flags)."""
    return tuple(int(v) for v in jaxlib.__version__.split(".")[:2]) >= (0, 10)


def avoid_cpu_miscompilation() -> bool:
    """Sets ``XLA_FLAGS`` to turn off XLA:CPU's YNNPACK fusions before JAX starts its backend.

    Returns whether the flag is in effect. The user's own choice of that flag is kept; on
    jaxlib older than 0.10 nothing is done.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in flags:
        return True
    if not _has_ynn_fusions() or backend_started():
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {_YNN_FLAG}".strip()
    return True


def warn_if_cpu_exposed() -> None:
    """Warns once when the workaround came too late (JAX's CPU backend already running)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in flags or not backend_started():
        return
    if not _has_ynn_fusions() or jax.default_backend() != "cpu":
        return
    warnings.warn(
        "JAX's CPU backend started before ntk_zoo was imported, so ntk_zoo could not turn off "
        "XLA:CPU's YNNPACK fusions, which can miscompile float32 reverse-mode derivatives "
        "(wrong kernels). Import ntk_zoo before running any JAX computation, or set "
        "XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= in the environment.",
        stacklevel=4,
    )
