"""ntk_zoo turns off XLA:CPU's YNNPACK fusions, which miscompile float32 reverse-mode
derivatives of a ViT with 100 logits in jaxlib 0.10 (jit differs from eager by up to 60%)."""

import json
import os
import pathlib
import subprocess
import sys

import jaxlib
import pytest

NEW_JAXLIB = tuple(int(v) for v in jaxlib.__version__.split(".")[:2]) >= (0, 10)
ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_flag_is_set_before_the_backend_starts():
    assert ("xla_cpu_experimental_ynn_fusion_type" in os.environ.get("XLA_FLAGS", "")) == NEW_JAXLIB


# Run as a user runs it: a fresh process with XLA's default settings (the suite's conftest
# turns optimisations and fusion emitters off, which could hide the miscompilation).
FLOAT32_VIT = """
import importlib.util, json, sys
import jax
jax.config.update("jax_enable_x64", True)  # the float64 reference; the kernels run in float32
import jax.numpy as jnp
import numpy as np
import ntk_zoo
spec = importlib.util.spec_from_file_location("bench_models", sys.argv[1])
bench_models = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_models)
m = bench_models.vit(o=100, n=3)
f32 = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), t)
want = ntk_zoo.ntk_fn(m.f, method="jacobian_contraction", trace_axes=(), vmap_axes=0)(
    np.asarray(m.x, np.float64), None, jax.tree.map(lambda a: np.asarray(a, np.float64), m.params)
)
errors = {}
for method in ("jacobian_contraction", "structured_derivatives"):
    kernel_fn = ntk_zoo.ntk_fn(m.f, method=method, trace_axes=(), vmap_axes=0)
    got = np.asarray(jax.jit(kernel_fn)(f32(m.x), None, f32(m.params)), np.float64)
    errors[method] = float(np.linalg.norm(got - want) / np.linalg.norm(want))
print(json.dumps(errors))
"""


def test_float32_vit_with_100_logits_is_right_under_jit():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", FLOAT32_VIT, str(ROOT / "benchmarks" / "bench_models.py")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    errors = json.loads(result.stdout.splitlines()[-1])
    assert set(errors) == {"jacobian_contraction", "structured_derivatives"}
    assert all(e <= 1e-4 for e in errors.values()), errors


@pytest.mark.skipif(not NEW_JAXLIB, reason="jaxlib < 0.10 has no YNNPACK fusions to turn off")
def test_warns_when_the_backend_started_first():
    code = "import jax.numpy as jnp; jnp.ones(1).block_until_ready(); import ntk_zoo"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=" in result.stderr
