#!/usr/bin/env bash
# Builds benchmarks/.nt-venv: neural-tangents 0.6.5 on jax/jaxlib 0.4.23, for
# benchmarks/vs_neural_tangents.py. Not a project dependency; nothing in ntk_zoo imports it.
#
#     bash benchmarks/nt_env.sh          # build (skips if the venv is already ready)
#     bash benchmarks/nt_env.sh --force  # rebuild from scratch
#
# `import neural_tangents` imports tensorflow and tf2jax (its experimental TF port), so both are
# needed even though the benchmark uses JAX only. neural-tangents and tf2jax declare a dependency
# on the full `tensorflow` distribution; we install the same release as `tensorflow-cpu` (a third
# of the download) and install those two packages with --no-deps, listing their other
# requirements by hand. `pip check` therefore reports "tensorflow is not installed": expected.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.nt-venv"
python="${NT_PYTHON:-python3.11}"

# Pinned set, chosen to install on CPython 3.11 and to work with numpy 1.26: tensorflow 2.15 is
# the release of neural-tangents 0.6.5's time (Dec 2023) and supports both; it needs ml-dtypes
# 0.3, which jax/jaxlib 0.4.23 accept. tf2jax 0.3.5 is the release contemporary with them.
pins=(
  "jax==0.4.23"
  "jaxlib==0.4.23"
  "numpy==1.26.4"
  "ml-dtypes==0.3.2"
  "scipy==1.11.4"
  "tensorflow-cpu==2.15.1"
  "frozendict==2.4.0"
  "absl-py==2.1.0"
  "dm-tree==0.1.8"
)
no_deps=(
  "tf2jax==0.3.5"
  "neural-tangents==0.6.5"
)

check() {
  "$venv/bin/python" - <<'EOF'
import warnings

warnings.filterwarnings("ignore")
import jax
import jax.numpy as jnp
import neural_tangents as nt
import numpy as np

assert jax.__version__ == "0.4.23", jax.__version__
assert nt.__version__ == "0.6.5", nt.__version__
assert np.__version__.startswith("1.26."), np.__version__

rng = np.random.default_rng(0)
params = [
    (jnp.asarray(rng.standard_normal((8, 16)), jnp.float32), jnp.zeros(16, jnp.float32)),
    (jnp.asarray(rng.standard_normal((16, 3)), jnp.float32), jnp.zeros(3, jnp.float32)),
]
x = jnp.asarray(rng.standard_normal((4, 8)), jnp.float32)


def f(p, x):
    (w1, b1), (w2, b2) = p
    return jax.nn.relu(x @ w1 / 8**0.5 + b1) @ w2 / 4.0 + b2


kernels = {}
for impl in ("JACOBIAN_CONTRACTION", "NTK_VECTOR_PRODUCTS", "STRUCTURED_DERIVATIVES"):
    for trace_axes in ((), (-1,)):
        fn = nt.empirical_ntk_fn(
            f, trace_axes=trace_axes, vmap_axes=0, implementation=nt.NtkImplementation[impl]
        )
        kernels[impl, trace_axes] = np.asarray(jax.jit(fn)(x, None, params))
for (impl, trace_axes), k in kernels.items():
    ref = kernels["JACOBIAN_CONTRACTION", trace_axes]
    err = np.abs(k - ref).max() / np.abs(ref).max()
    assert err < 1e-5, (impl, trace_axes, err)
print(
    f"nt-venv ok: neural-tangents {nt.__version__}, jax {jax.__version__}, "
    f"numpy {np.__version__}; JC, VP and SD agree on a small MLP"
)
EOF
}

if [[ "${1:-}" == "--force" ]]; then
  rm -rf "$venv"
elif [[ -x "$venv/bin/python" ]] && check 2>/dev/null; then
  echo "$venv is ready (use --force to rebuild)"
  exit 0
fi

if ! command -v "$python" >/dev/null; then
  echo "error: $python not found; set NT_PYTHON to a CPython 3.11 interpreter" >&2
  exit 1
fi
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "${pins[@]}"
"$venv/bin/python" -m pip install -q --no-deps "${no_deps[@]}"
"$venv/bin/python" -m pip freeze | grep -iE '^(jax|jaxlib|numpy|neural-tangents|tensorflow-cpu|tf2jax)=='
check
