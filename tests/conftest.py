"""Test-wide JAX settings: float64 oracles, strict promotion, fast compiles."""

import jax

jax.config.update("jax_enable_x64", True)
# Correctness tests only: skip XLA's optimisation passes to keep compiles short.
jax.config.update("jax_disable_most_optimizations", True)
