"""Matrix-free spectra (operator, trace, Lanczos, SLQ) against the dense kernel, in float64."""

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest

import ntk_zoo
from ntk_zoo.spectrum import (
    lanczos,
    ntk_operator,
    plot_spectral_density,
    spectral_density,
    spectrum,
    trace,
)
from tests.cases import add_bias


def mlp(params, x):
    h = jnp.tanh(add_bias(x @ params["w1"] / np.sqrt(x.shape[-1]), params["b1"]))
    return add_bias(h @ params["w2"] / np.sqrt(h.shape[-1]), params["b2"])


def make_params(d, width, o, seed=0):
    k = jax.random.split(jax.random.key(seed), 3)
    return {
        "w1": jax.random.normal(k[0], (d, width), jnp.float64),
        "b1": 0.1 * jax.random.normal(k[1], (width,), jnp.float64),
        "w2": jax.random.normal(k[2], (width, o), jnp.float64),
        "b2": jnp.zeros(o, jnp.float64),
    }


def make_x(n, d, seed=1):
    return jax.random.normal(jax.random.key(seed), (n, d), jnp.float64)


@pytest.fixture(scope="module")
def big():
    """512 examples; d=32 inputs and width 128 keep λ_min of the (n, n) kernel separated
    enough (condition number ~3e4) for Lanczos to resolve it in 150 iterations."""
    params, x = make_params(32, 128, 2), make_x(512, 32)
    kernel = np.asarray(ntk_zoo.ntk_fn(mlp, vmap_axes=0)(x, None, params))
    return params, x, kernel


@pytest.fixture(scope="module")
def small():
    """40 examples, 3 logits: the (n·o, n·o) = (120, 120) kernel."""
    params, x = make_params(4, 16, 3, seed=2), make_x(40, 4, seed=3)
    full = np.asarray(ntk_zoo.ntk_fn(mlp, trace_axes=(), vmap_axes=0)(x, None, params))
    averaged = np.asarray(ntk_zoo.ntk_fn(mlp, vmap_axes=0)(x, None, params))
    return params, x, full, averaged


def test_dense_spectrum_matches_eigvalsh(small):
    _, _, full, averaged = small
    for kernel in (averaged, full):
        s = spectrum(kernel)
        flat = kernel if kernel.ndim == 2 else kernel.transpose(0, 2, 1, 3).reshape(120, 120)
        expected = np.linalg.eigvalsh(flat)[::-1]
        np.testing.assert_allclose(s.eigenvalues, expected, rtol=1e-10, atol=1e-12 * expected[0])
        assert s.lambda_max == pytest.approx(expected[0], rel=1e-12)
        assert s.trace == pytest.approx(np.trace(flat), rel=1e-12)
        if expected[-1] > 0:
            assert s.condition_number == pytest.approx(expected[0] / expected[-1], rel=1e-8)
        else:
            assert s.condition_number == np.inf and s.n_nonpositive > 0


@pytest.mark.parametrize("block_size", [7, 40], ids=["padded-blocks", "one-block"])
@pytest.mark.parametrize("trace_axes", [(-1,), ()], ids=["averaged", "full"])
def test_operator_matches_dense_kernel(small, trace_axes, block_size):
    params, x, full, averaged = small
    flat = averaged if trace_axes else full.transpose(0, 2, 1, 3).reshape(120, 120)
    op = ntk_operator(mlp, params, x, block_size=block_size, trace_axes=trace_axes)
    assert op.size == flat.shape[0]
    v = np.random.default_rng(0).normal(size=op.size)
    expected = flat @ v
    np.testing.assert_allclose(op(v), expected, rtol=0, atol=1e-12 * np.abs(expected).max())
    if not trace_axes:  # (n, o) vectors keep their shape
        assert op(v.reshape(40, 3)).shape == (40, 3)


@pytest.mark.parametrize("trace_axes", [(-1,), ()], ids=["averaged", "full"])
def test_exact_trace_equals_dense_trace(small, trace_axes):
    params, x, full, averaged = small
    dense = np.trace(averaged) if trace_axes else np.einsum("iiaa->", full)
    got = trace(mlp, params, x, block_size=16, trace_axes=trace_axes)
    assert got == pytest.approx(dense, rel=1e-12)


def test_trace_of_pure_fn_big(big):
    params, x, kernel = big
    assert trace(ntk_zoo.PureFn(mlp, params), x=x, block_size=200) == pytest.approx(
        np.trace(kernel), rel=1e-12
    )


def test_lanczos_matches_dense_512(big):
    params, x, kernel = big
    dense = spectrum(kernel)
    result = lanczos(mlp, params, x, num_iters=150, k=3, block_size=128, key=jax.random.key(0))
    rel = lambda a, b: abs(a - b) / abs(b)
    assert result.num_iters <= 150
    # Required accuracy 1e-3; measured ~1e-15 (λ_max) and ~5e-10 (λ_min).
    assert rel(result.lambda_max, dense.lambda_max) < 1e-3
    assert rel(result.lambda_min, dense.lambda_min) < 1e-3
    assert rel(result.condition_number, dense.condition_number) < 1e-3
    np.testing.assert_allclose(result.top, dense.eigenvalues[:3], rtol=1e-3)
    np.testing.assert_allclose(result.bottom, dense.eigenvalues[::-1][:3], rtol=1e-3)
    # The residual bounds are honest: the true eigenvalue lies within them.
    assert abs(result.lambda_min - dense.lambda_min) <= result.lambda_min_bound + 1e-12
    assert abs(result.lambda_max - dense.lambda_max) <= result.lambda_max_bound + 1e-9


def test_lanczos_full_operator_exhausts_the_space(small):
    params, x, full, _ = small
    dense = spectrum(full)
    result = lanczos(mlp, params, x, num_iters=500, k=2, block_size=16, trace_axes=())
    assert result.num_iters == 120 and result.converged  # capped at n·o: exact
    np.testing.assert_allclose(result.ritz_values, dense.eigenvalues, rtol=0, atol=1e-9 * 1e3)
    assert result.lambda_max == pytest.approx(dense.lambda_max, rel=1e-10)


def test_lanczos_rank_deficient_reports_inf_condition():
    # 3 params, 30 examples: rank 3, so λ_min = 0 up to rounding and cond = inf, explicitly.
    f = lambda p, x: (x @ p)[:, None]
    x = make_x(30, 3)
    result = lanczos(f, jnp.ones(3, jnp.float64), x, num_iters=30, k=2)
    dense = spectrum(np.asarray(x @ x.T))
    assert result.lambda_max == pytest.approx(dense.lambda_max, rel=1e-10)
    assert abs(result.lambda_min) < 1e-10 * dense.lambda_max
    if result.lambda_min <= 0:
        assert result.condition_number == np.inf
    np.testing.assert_allclose(result.top[:2], dense.eigenvalues[:2], rtol=1e-10)


def test_lanczos_early_stop_on_tolerance(small):
    params, x, _, averaged = small
    result = lanczos(mlp, params, x, num_iters=40, k=1, tol=1e-2, block_size=40, progress=True)
    assert result.converged and result.num_iters < 40
    assert result.lambda_max == pytest.approx(spectrum(averaged).lambda_max, rel=1e-2)


def test_spectral_density(small, tmp_path):
    params, x, _, averaged = small
    n = averaged.shape[0]
    probes = 64
    d = spectral_density(mlp, params, x, num_probes=probes, num_iters=12, block_size=40, key=3)
    dense = spectrum(averaged)
    assert d.nodes.shape == d.weights.shape == (probes, 12)
    assert d.weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.trapezoid(d.density, d.grid) == pytest.approx(1.0, abs=1e-6)
    # Ritz values lie inside the spectrum.
    assert d.nodes.min() >= dense.lambda_min - 1e-9 and d.nodes.max() <= dense.lambda_max + 1e-9
    # Smoothing keeps the mean; the mean estimates tr Θ / n (Hutchinson): within 4 standard
    # deviations, Var(zᵀΘz) = 2 (‖Θ‖²_F − Σ Θ_ii²) for Rademacher z.
    mean = float((d.weights * d.nodes).sum())
    assert np.trapezoid(d.grid * d.density, d.grid) == pytest.approx(mean, rel=1e-6)
    std = np.sqrt(2 * ((averaged**2).sum() - (np.diag(averaged) ** 2).sum()) / probes) / n
    assert abs(mean - dense.trace / n) <= 4 * std
    path = plot_spectral_density(d, str(tmp_path / "density.png"))
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 100 and image.std() > 0


def test_compiled_step_never_holds_an_n_by_n_array():
    n = 4096
    params, x = make_params(8, 32, 3), make_x(n, 8)
    for trace_axes in [(-1,), ()]:
        op = ntk_operator(mlp, params, x, block_size=64, trace_axes=trace_axes)
        v = op.to_blocks(np.ones(op.size))
        compiled = jax.jit(op.apply_blocks).lower(params, op.x_blocks, v).compile()
        memory = compiled.memory_analysis()
        used = memory.temp_size_in_bytes + memory.output_size_in_bytes
        # Measured ~0.9 MB (averaged) and ~0.14 MB (full) against 134 MB for one n×n array.
        assert 0 < used < n * n * 8 / 50, (trace_axes, used)


def test_errors(small):
    params, x, _, _ = small
    with pytest.raises(ValueError, match="k=41"):
        lanczos(mlp, params, x, k=41, block_size=40)
    with pytest.raises(ValueError, match="num_iters"):
        lanczos(mlp, params, x, k=3, num_iters=2)
    with pytest.raises(ValueError, match="trace_axes"):
        ntk_operator(mlp, params, x, trace_axes=(0,))
    with pytest.raises(ValueError, match="block_size"):
        ntk_operator(mlp, params, x, block_size=0)
    with pytest.raises(ValueError, match="size 40"):
        ntk_operator(mlp, params, x)(np.ones(39))
    with pytest.raises(ValueError, match=r"\(n, o\)"):
        ntk_operator(lambda p, x: mlp(p, x)[:, :, None], params, x)
    coupled = ntk_zoo.PureFn(mlp, params, vmap_axes=None)
    with pytest.raises(ValueError, match="interact"):
        ntk_operator(coupled, x=x, block_size=8)
    assert ntk_operator(coupled, x=x, block_size=40).size == 40
    with pytest.raises(TypeError, match="params"):
        trace(mlp, None, x)
