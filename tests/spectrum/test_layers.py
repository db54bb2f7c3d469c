"""Per-layer shares of the trace and of λ_max, from ntk_fn(..., sum_params=False)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntk_zoo
from ntk_zoo.spectrum import flatten_kernel, layer_shares
from tests.cases import add_bias


def mlp(params, x):
    p = params["params"] if "params" in params else params
    h = jnp.tanh(add_bias(x @ p["Dense_0"]["kernel"], p["Dense_0"]["bias"]))
    h = jnp.tanh(h @ p["block"]["Dense_1"]["kernel"])
    return add_bias(h @ p["Dense_2"]["kernel"], p["Dense_2"]["bias"])


def make_params(seed=0):
    k = jax.random.split(jax.random.key(seed), 5)
    normal = lambda key, shape: jax.random.normal(key, shape, jnp.float64) / np.sqrt(shape[0])
    return {
        "Dense_0": {"kernel": normal(k[0], (3, 8)), "bias": 0.1 * normal(k[1], (8,))},
        "block": {"Dense_1": {"kernel": normal(k[2], (8, 8))}},
        "Dense_2": {"kernel": normal(k[3], (8, 2)), "bias": 0.1 * normal(k[4], (2,))},
    }


X = jax.random.normal(jax.random.key(7), (10, 3), jnp.float64)


def per_leaf(params, trace_axes):
    return ntk_zoo.ntk_fn(mlp, trace_axes=trace_axes, sum_params=False)(X, None, params)


@pytest.mark.parametrize("trace_axes", [(-1,), ()], ids=["averaged-2d", "full-4d"])
def test_shares_against_direct_computation(trace_axes):
    kernels = per_leaf(make_params(), trace_axes)
    shares = layer_shares(kernels)
    assert list(shares) == ["Dense_0", "Dense_2", "block/Dense_1"]
    for key in ("trace", "lambda_max"):
        assert sum(s[key] for s in shares.values()) == pytest.approx(1.0, abs=1e-12)

    flat = {
        "/".join(str(k.key) for k in path): flatten_kernel(np.asarray(k))
        for path, k in jax.tree_util.tree_flatten_with_path(kernels)[0]
    }
    total = sum(flat.values())
    eigenvalues, vectors = np.linalg.eigh(total)
    v, lam = vectors[:, -1], eigenvalues[-1]
    groups = {
        "Dense_0": ["Dense_0/kernel", "Dense_0/bias"],
        "Dense_2": ["Dense_2/kernel", "Dense_2/bias"],
        "block/Dense_1": ["block/Dense_1/kernel"],
    }
    for name, leaves in groups.items():
        expected_trace = sum(np.trace(flat[leaf]) for leaf in leaves) / np.trace(total)
        expected_lambda = sum(v @ flat[leaf] @ v for leaf in leaves) / lam
        assert shares[name]["trace"] == pytest.approx(expected_trace, rel=1e-12)
        assert shares[name]["lambda_max"] == pytest.approx(expected_lambda, rel=1e-10)


def test_grouping_options_and_linen_prefix():
    params = make_params()
    kernels = per_leaf({"params": params}, (-1,))
    default = layer_shares(kernels)
    assert list(default) == ["Dense_0", "Dense_2", "block/Dense_1"]  # `params/` dropped
    top = layer_shares(kernels, group=1)
    assert list(top) == ["Dense_0", "Dense_2", "block"]
    assert top["block"] == pytest.approx(default["block/Dense_1"])
    by_kind = layer_shares(kernels, group=lambda path: path.rsplit("/", 1)[-1])
    assert list(by_kind) == ["bias", "kernel"]
    assert by_kind["bias"]["trace"] + by_kind["kernel"]["trace"] == pytest.approx(1.0)
    leaves = layer_shares(kernels, group=9)  # more components than the paths have: per leaf
    assert len(leaves) == 5


def test_errors():
    params = make_params()
    rect = ntk_zoo.ntk_fn(mlp, sum_params=False)(X, X[:4], params)
    with pytest.raises(ValueError, match="square"):
        layer_shares(rect)
    with pytest.raises(ValueError, match="differ in shape"):
        layer_shares({"a": np.eye(3), "b": np.eye(4)})
    with pytest.raises(ValueError, match="group"):
        layer_shares(per_leaf(params, (-1,)), group=0)
    with pytest.raises(ValueError, match=r"\(n, n\) or \(n, n, o, o\)"):
        layer_shares({"a": np.ones(3)})
