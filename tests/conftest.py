"""Test-wide JAX settings: float64 oracles, four simulated CPU devices, fast compiles.

Rank promotion stays JAX's default ("allow"): the tests' own models (``tests/cases.py``)
broadcast biases implicitly. ``tests/test_docs.py`` runs the documented examples under
``jax.numpy_rank_promotion("raise")``.
"""

import os
import tempfile

import jax

# auto's cost table: never the developer's cached calibration (tests that need one make it).
os.environ["NTK_ZOO_CACHE_DIR"] = os.path.join(
    tempfile.gettempdir(), f"ntk_zoo-tests-{os.getpid()}"
)
jax.config.update("jax_enable_x64", True)
# Four simulated CPU devices for the sharding tests (must precede any backend use).
jax.config.update("jax_num_cpu_devices", 4)
# Correctness tests only: skip XLA's optimisation passes to keep compiles short.
jax.config.update("jax_disable_most_optimizations", True)

import ntk_zoo  # noqa: E402, F401  (first: sets its XLA:CPU workaround before the backend starts)
