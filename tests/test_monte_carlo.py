"""monte_carlo_kernel_fn: the mean (and spread) of per-seed empirical kernels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntk_zoo
from tests.oracle import rel_error


def init_fn(key):
    k1, k2 = jax.random.split(key)
    return {
        "w": jax.random.normal(k1, (3, 6), jnp.float64),
        "v": jax.random.normal(k2, (6, 2), jnp.float64) / np.sqrt(6),
    }


def apply_fn(p, x):
    return jnp.tanh(x @ p["w"]) @ p["v"]


KEY = jax.random.key(3)
X1 = jax.random.normal(jax.random.key(10), (5, 3), jnp.float64)
X2 = jax.random.normal(jax.random.key(11), (3, 3), jnp.float64)


def per_seed(kind, n, x2=None, **axes):
    fn = (ntk_zoo.ntk_fn if kind == "ntk" else ntk_zoo.nngp_fn)(apply_fn, **axes)
    return np.stack([fn(X1, x2, init_fn(jax.random.fold_in(KEY, i))) for i in range(n)])


def test_mean_of_k_seeds():
    mc = ntk_zoo.monte_carlo_kernel_fn(init_fn, apply_fn, KEY, 4, get=("nngp", "ntk"))
    got = mc(X1, X2)
    assert got._fields == ("nngp", "ntk")
    for kind in ("nngp", "ntk"):
        assert rel_error(getattr(got, kind), per_seed(kind, 4, X2).mean(0)) < 1e-12


def test_running_estimates_and_spread():
    mc = ntk_zoo.monte_carlo_kernel_fn(
        init_fn, apply_fn, KEY, [1, 3, 4], get="ntk", trace_axes=(), return_std=True
    )
    samples = per_seed("ntk", 4, trace_axes=())
    estimates = list(mc(X1))
    assert len(estimates) == 3
    for n, (mean, std) in zip([1, 3, 4], estimates):
        assert mean.shape == (5, 5, 2, 2)
        assert rel_error(mean, samples[:n].mean(0)) < 1e-12
        if n == 1:
            assert np.isnan(std).all()
        else:
            assert rel_error(std, samples[:n].std(0, ddof=1)) < 1e-10


def test_batched_blocks_and_devices_equal_one_call():
    axes = dict(get=("nngp", "ntk"), vmap_axes=0)
    whole = ntk_zoo.monte_carlo_kernel_fn(init_fn, apply_fn, KEY, 2, **axes)(X1, X2)
    for mesh in (None, True):
        mc = ntk_zoo.monte_carlo_kernel_fn(
            init_fn, apply_fn, KEY, 2, batch_size=2, mesh=mesh, **axes
        )
        got = mc(X1, X2)
        assert rel_error(got.nngp, whole.nngp) < 1e-12
        assert rel_error(got.ntk, whole.ntk) < 1e-12


def test_pure_fn_apply_and_errors():
    pure = ntk_zoo.PureFn(apply_fn, init_fn(jax.random.key(99)))
    mc = ntk_zoo.monte_carlo_kernel_fn(init_fn, pure, KEY, 2, get="nngp")
    assert rel_error(mc(X1), per_seed("nngp", 2).mean(0)) < 1e-12  # its params are not used
    with pytest.raises(ValueError, match="increasing"):
        ntk_zoo.monte_carlo_kernel_fn(init_fn, apply_fn, KEY, [3, 2])
    with pytest.raises(ValueError, match="positive"):
        ntk_zoo.monte_carlo_kernel_fn(init_fn, apply_fn, KEY, 0)
    with pytest.raises(ValueError, match="get="):
        ntk_zoo.monte_carlo_kernel_fn(init_fn, apply_fn, KEY, 2, get="ntkgp")
    with pytest.raises(TypeError, match="params"):
        ntk_zoo.monte_carlo_kernel_fn(init_fn, apply_fn, KEY, 2)(X1, params=pure.params)
