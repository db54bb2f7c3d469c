"""gradient_features: shapes, the same features in any batch, unbiasedness within a seeded
statistical bound, streamed and resumed files, no P-sized allocation, clear errors."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntk_zoo
from tests.cases import CASES

CASE = {c.name: c for c in CASES}
KEY = jax.random.key(7)


def _features(case, **kw):
    kw.setdefault("vmap_axes", case.vmap_axes)
    return ntk_zoo.gradient_features(case.f, case.params, case.x1, key=KEY, **kw)


def test_shapes():
    mlp, tree = CASE["mlp"], CASE["pytree_out"]
    assert _features(mlp, dim=5, cotangents="pntk").shape == (3, 5)
    assert _features(mlp, dim=5).shape == (3, 3, 5)
    got = jax.tree.map(jnp.shape, _features(tree, dim=5))
    assert got == {"logits": (3, 2, 5), "aux": [(3, 4, 2, 5)]}


def test_same_features_in_any_batch():
    case = CASE["pytree_in"]  # pytree inputs, batch axes 0 and 1
    whole = _features(case, dim=300, cotangents="pntk")  # two column blocks, the last partial
    part = ntk_zoo.gradient_features(
        case.f,
        case.params,
        {"a": case.x1["a"][1:], "b": case.x1["b"][:, 1:]},
        dim=300,
        key=KEY,
        cotangents="pntk",
        vmap_axes=case.vmap_axes,
    )
    np.testing.assert_allclose(part, whole[1:], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("projection", ["gaussian", "rademacher"])
def test_unbiased_within_seeded_bound(projection):
    """|Φ_i·Φ_j - Θ_ij| <= 5 σ_ij with σ_ij² = (Θ_ii Θ_jj + Θ_ij²) / dim (Gaussian entries;
    ±1 entries have a smaller variance): a 5-sigma bound per entry, on a fixed seed."""
    case, dim = CASE["mlp"], 20000
    exact = np.asarray(
        ntk_zoo.ntk_fn(case.f, vmap_axes=0, cotangents="pntk")(case.x1, None, case.params)
    )
    phi = _features(case, dim=dim, cotangents="pntk", projection=projection)
    est = np.asarray(ntk_zoo.kernel_from_features(phi))
    d = np.diag(exact)
    sigma = np.sqrt((np.outer(d, d) + exact**2) / dim)
    assert np.all(np.abs(est - exact) <= 5 * sigma)
    assert np.abs(est - exact).max() > 0  # a sketch, not the kernel itself
    err = ntk_zoo.feature_error(phi, exact)
    assert err.relative_frobenius <= 5 * err.expected


def test_full_output_features_estimate_full_kernel():
    case, dim = CASE["mlp"], 20000
    kernel_fn = ntk_zoo.ntk_fn(case.f, vmap_axes=0, trace_axes=())
    exact = np.asarray(kernel_fn(case.x1, None, case.params))
    est = np.asarray(ntk_zoo.kernel_from_features(_features(case, dim=dim)))
    d = np.einsum("iiaa->ia", exact)
    sigma = np.sqrt((np.einsum("ia,jb->ijab", d, d) + exact**2) / dim)
    assert est.shape == exact.shape == (3, 3, 3, 3)
    assert np.all(np.abs(est - exact) <= 5 * sigma)


def test_streamed_and_resumed_file_equals_in_memory(tmp_path):
    case = CASE["mlp"]
    x = jnp.concatenate([case.x1, case.x2, case.x1 * 2])  # 8 examples: blocks of 3, 3, 2
    run = lambda **kw: ntk_zoo.gradient_features(
        case.f, case.params, x, dim=40, key=KEY, cotangents="pntk", vmap_axes=0, **kw
    )
    memory = np.asarray(run(batch_size=3))  # in memory, by the same program (one compile)
    path = str(tmp_path / "features.npy")
    np.testing.assert_allclose(run(batch_size=3, out=path), memory, rtol=1e-12)
    # An interrupted run: block 2 never written; block 0 recorded (marked here by a sentinel).
    mm = np.load(path, mmap_mode="r+")
    mm[:3], mm[6:] = 7.0, np.nan
    mm.flush()
    record = path + ".blocks.json"
    with open(record) as f:
        saved = json.load(f)
    with open(record, "w") as f:
        json.dump({**saved, "done": [0, 1]}, f)
    resumed = np.asarray(run(batch_size=3, out=path))
    assert np.all(resumed[:3] == 7.0)  # recorded blocks are not computed again
    np.testing.assert_allclose(resumed[3:], memory[3:], rtol=1e-12)
    # Another process's record (of a run with 2 processes) counts too: its blocks are kept.
    mm = np.load(path, mmap_mode="r+")
    mm[6:] = 5.0
    mm.flush()
    with open(record, "w") as f:
        json.dump({**saved, "done": [0]}, f)
    with open(path + ".blocks.1.json", "w") as f:
        json.dump({**saved, "done": [2]}, f)
    resumed = np.asarray(run(batch_size=3, out=path))
    assert np.all(resumed[6:] == 5.0) and np.all(resumed[:3] == 7.0)
    np.testing.assert_allclose(resumed[3:6], memory[3:6], rtol=1e-12)
    # A file made anew (the old one gone) drops every stale record, other processes' too.
    os.remove(path)
    np.testing.assert_allclose(run(batch_size=3, out=path), memory, rtol=1e-12)
    assert not os.path.exists(path + ".blocks.1.json")
    with pytest.raises(ValueError, match="other inputs or settings"):
        ntk_zoo.gradient_features(
            case.f,
            case.params,
            x,
            dim=40,
            key=jax.random.key(8),
            cotangents="pntk",
            vmap_axes=0,
            batch_size=3,
            out=path,
        )


def test_no_projection_sized_allocation():
    """A 100M-param dense layer, dim=8192: P would be 3.3 TB in float32; the compiled program
    needs the per-example gradient (400 MB) and one block of P, checked without running it."""
    f = lambda p, x: x @ p
    params = jax.ShapeDtypeStruct((10_000, 10_000), jnp.float32)
    x = jax.ShapeDtypeStruct((1, 10_000), jnp.float32)
    run = lambda p, x: ntk_zoo.gradient_features(
        f, p, x, dim=8192, key=KEY, cotangents="pntk", vmap_axes=0
    )
    memory = jax.jit(run).lower(params, x).compile().memory_analysis()
    assert memory.temp_size_in_bytes < 2**31


ERRORS = {
    "cotangent-shape": (dict(dim=4, cotangents=np.ones(5)), ValueError, "does not broadcast"),
    "dim-zero": (dict(dim=0), ValueError, "positive integer"),
    "dim-float": (dict(dim=2.5), ValueError, "positive integer"),
    "key-int": (dict(dim=4, key=0), TypeError, "PRNG key"),
    "key-float": (dict(dim=4, key=np.zeros(2)), TypeError, "PRNG key"),
    "projection": (dict(dim=4, projection="sparse"), ValueError, "gaussian"),
}


@pytest.mark.parametrize("error", list(ERRORS))
def test_clear_errors(error):
    case = CASE["mlp"]
    kw, kind, match = ERRORS[error]
    kw = {"key": KEY, **kw}
    with pytest.raises(kind, match=match):
        ntk_zoo.gradient_features(case.f, case.params, case.x1, vmap_axes=0, **kw)
