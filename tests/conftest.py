"""Test-wide JAX settings: float64 oracles, strict promotion, fast compiles."""

import jax

jax.config.update("jax_enable_x64", True)
# Four simulated CPU devices for the sharding tests (must precede any backend use).
jax.config.update("jax_num_cpu_devices", 4)
# Correctness tests only: skip XLA's optimisation passes to keep compiles short.
jax.config.update("jax_disable_most_optimizations", True)

import ntk_zoo  # noqa: E402, F401  (first: sets its XLA:CPU workaround before the backend starts)
