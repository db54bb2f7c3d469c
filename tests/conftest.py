"""Test-wide JAX settings: float64 oracles, strict rank promotion, four simulated CPU devices,
fast compiles. Warnings are errors (``pyproject.toml``)."""

import os
import tempfile

import jax

# auto's cost table: never the developer's cached calibration (tests that need one make it).
os.environ["NTK_ZOO_CACHE_DIR"] = os.path.join(
    tempfile.gettempdir(), f"ntk_zoo-tests-{os.getpid()}"
)
jax.config.update("jax_enable_x64", True)
# No implicit broadcasting across ranks, in the tests' models or in the library.
jax.config.update("jax_numpy_rank_promotion", "raise")
# Four simulated CPU devices for the sharding tests (must precede any backend use).
jax.config.update("jax_num_cpu_devices", 4)
# Correctness tests only: skip XLA's optimisation passes to keep compiles short, and compile
# fusions with XLA:CPU's older loop emitters, which compile the suite's many small programs in
# about half the time of the MLIR fusion emitters (same results up to rounding). Processes the
# tests start inherit the flag. tests/test_xla_workaround.py checks kernels under the default
# settings a user runs.
jax.config.update("jax_disable_most_optimizations", True)
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_use_fusion_emitters=false"

import ntk_zoo  # noqa: E402, F401  (first: sets its XLA:CPU workaround before the backend starts)
