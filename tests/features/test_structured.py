"""gradient_features(projection="structured"): Kronecker ``P_in ⊗ P_out`` per dense and
convolution leaf (through the layer's inputs and output cotangents), the other leaves sketched
from their Jacobians. Unbiased against the float64 oracle within a seeded statistical bound,
the same features in any batch, shapes, streamed files, no per-example gradient of a
Kronecker leaf, and the split of ``dim``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import ntk_zoo
from ntk_zoo.structured import _kronecker, _warnings, kronecker_split
from tests.cases import CASES, Case, add_bias, zoo_case
from tests.oracle import oracle_ntk

CASE = {c.name: c for c in CASES}
KEY = jax.random.key(3)


def _scaled(h, s):
    return h * jnp.expand_dims(s, tuple(range(h.ndim - s.ndim)))


def mixed(params, x):
    """A convolution, elementwise params, a per-head (batched) product, a dense layer used
    twice (tied) and a head: Kronecker leaves beside leaves that fall back."""
    h = lax.conv_general_dilated(
        x, params["conv"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    h = jnp.tanh(add_bias(_scaled(h, params["scale"]), params["shift"]))
    n, a, b, c = h.shape
    h = h.reshape(n, a * b, 2, c // 2).transpose(0, 2, 1, 3)  # (n, heads, positions, c/2)
    h = jnp.tanh(jnp.einsum("nhtc,hcd->nhtd", h, params["per_head"]))  # W batched: a diagonal
    h = h.mean(2).reshape(n, -1)
    h = jnp.tanh(h @ params["tied"])
    h = jnp.tanh(h @ params["tied"])
    return add_bias(h @ params["head"], params["bias"])


def _normal(seed, *shape, scale=1.0):
    return scale * np.random.default_rng(seed).standard_normal(shape)


MIXED = Case(
    "mixed",
    mixed,
    {
        "conv": _normal(0, 3, 3, 2, 4, scale=0.5),
        "scale": 1 + _normal(1, 4, scale=0.1),
        "shift": _normal(2, 4, scale=0.1),
        "per_head": _normal(3, 2, 2, 3, scale=0.7),
        "tied": _normal(4, 6, 6, scale=0.5),
        "head": _normal(5, 6, 3, scale=0.5),
        "bias": _normal(6, 3, scale=0.1),
    },
    _normal(10, 3, 4, 4, 2),
    _normal(11, 2, 4, 4, 2),
)
CASE["mixed"] = MIXED


def wide(params, x):
    h = jnp.tanh(x @ params["w0"])
    return jnp.tanh(h @ params["w1"]) @ params["head"]


# Layers wide enough for two random factors at dim=64 (each side > 2·√64), no fallback leaves:
# a wrong scale of the Kronecker features moves the whole kernel.
WIDE = Case(
    "wide",
    wide,
    {
        "w0": _normal(0, 20, 24, scale=0.3),
        "w1": _normal(1, 24, 20, scale=0.3),
        "head": _normal(2, 20, 3, scale=0.3),
    },
    _normal(10, 3, 20),
    _normal(11, 2, 20),
)
CASE["wide"] = WIDE


def _features(case, x=None, **kw):
    kw.setdefault("vmap_axes", case.vmap_axes)
    x = case.x1 if x is None else x
    return ntk_zoo.gradient_features(
        case.f, case.params, x, projection="structured", **{"key": KEY, **kw}
    )


def _kernels_over_keys(case, keys, **kw):
    """``Φ Φᵀ`` of the features from ``jax.random.key(k)`` for ``k < keys``: the same draws as
    a loop of calls, computed by one compiled program vmapped over the key (the parts that do
    not depend on the key, the layers' inputs and cotangents, computed once, not per key)."""
    one = lambda key: ntk_zoo.kernel_from_features(_features(case, key=key, **kw))
    return np.asarray(jax.jit(jax.vmap(one))(jax.vmap(jax.random.key)(np.arange(keys))))


def _exact(case, cotangents):
    full = oracle_ntk(case.f, case.x1, None, case.params, trace_axes=())  # (n, n, O, O)
    if cotangents == "pntk":
        return np.asarray(full).sum((2, 3)) / full.shape[-1]
    return np.asarray(full)


@pytest.mark.parametrize("cotangents", ["pntk", None])
@pytest.mark.parametrize(
    ("name", "dim"),
    [
        ("wide", 64),
        ("mlp", 7),
        ("convnet", 24),
        ("mixed", 7),
        ("mixed", 24),
        ("vit-linen", 16),  # the zoo's ViT: DenseGeneral kernels over several axes
        ("wrn-linen", 16),
    ],
)
def test_unbiased_within_seeded_bound(name, dim, cotangents):
    """The mean of ``Φ Φᵀ`` over 200 keys is within 5 standard errors (the spread over the
    keys) of the oracle's kernel, entry by entry, and the bound is tight enough to see a
    wrong scale (a factor 1.5 on the kernel) in every diagonal entry. At ``dim=7`` the dense
    and convolution leaves take two random factors (the grid's first 7 of 3×3 columns); at
    ``dim=24`` most keep one side exact (``test_split``)."""
    case, keys = CASE[name] if name in CASE else zoo_case(name), 200
    exact = _exact(case, cotangents)
    est = _kernels_over_keys(case, keys, dim=dim, cotangents=cotangents)
    assert est.shape[1:] == exact.shape
    mean, error = est.mean(0), est.std(0) / np.sqrt(keys)
    assert np.all(np.abs(mean - exact) <= 5 * error + 1e-12 * np.abs(exact).max())
    diag = "ii->i" if exact.ndim == 2 else "iiaa->ia"  # Θ(x_i, x_i) of each output
    assert np.all(5 * np.einsum(diag, error) < 0.5 * np.einsum(diag, exact))
    assert np.abs(est[0] - exact).max() > 0  # a sketch, not the kernel itself


def test_same_features_in_any_batch():
    case = MIXED
    whole = _features(case, dim=50, cotangents="pntk")
    part = _features(case, x=case.x1[1:], dim=50, cotangents="pntk")
    np.testing.assert_allclose(part, whole[1:], rtol=1e-12, atol=1e-14)
    again = _features(case, x=jnp.concatenate([case.x2, case.x1]), dim=50, cotangents="pntk")
    np.testing.assert_allclose(again[2:], whole, rtol=1e-12, atol=1e-14)


def test_shapes():
    mlp, tree = CASE["mlp"], CASE["pytree_out"]
    assert _features(mlp, dim=7, cotangents="pntk").shape == (3, 7)
    assert _features(mlp, dim=7).shape == (3, 3, 7)
    assert _features(MIXED, dim=5).shape == (3, 3, 5)
    got = jax.tree.map(jnp.shape, _features(tree, dim=5))
    assert got == {"logits": (3, 2, 5), "aux": [(3, 4, 2, 5)]}


def test_without_vmap_axes_the_batch_is_one_example():
    """A plain ``f`` (no ``vmap_axes``): the whole batch's Jacobian, positions include the
    examples; still unbiased (the mean over keys against the oracle)."""
    case, keys = CASE["mlp"], 150
    exact = _exact(case, None)
    est = _kernels_over_keys(case, keys, dim=16, vmap_axes=None)
    mean, error = est.mean(0), est.std(0) / np.sqrt(keys)
    assert np.all(np.abs(mean - exact) <= 5 * error + 1e-12)


def test_streamed_file_equals_in_memory(tmp_path):
    x = jnp.concatenate([MIXED.x1, MIXED.x2])  # 5 examples: blocks of 2, 2, 1
    run = lambda **kw: _features(MIXED, x=x, dim=30, cotangents="pntk", **kw)
    memory = np.asarray(run())
    np.testing.assert_allclose(run(batch_size=2), memory, rtol=1e-12, atol=1e-14)
    path = str(tmp_path / "features.npy")
    np.testing.assert_allclose(run(batch_size=2, out=path), memory, rtol=1e-12, atol=1e-14)


def test_kronecker_leaf_never_forms_its_gradient():
    """A 100M-param dense layer and a 9.4M-param 3×3 convolution, dim=8192: the compiled
    programs hold neither leaf's per-example gradient (400 MB, 38 MB) nor a block of a dense
    ``P`` (64 MB), only ``P_in``, ``P_out`` and the projected factors (checked without
    running them)."""
    dense = lambda p, x: x @ p
    conv = lambda p, x: lax.conv_general_dilated(
        x, p, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    ).sum((1, 2))
    for f, p, x, bound in [
        (dense, (10_000, 10_000), (2, 10_000), 2**25),
        (conv, (3, 3, 1024, 1024), (2, 4, 4, 1024), 2**24),
    ]:
        run = lambda p, x, f=f: ntk_zoo.gradient_features(
            f, p, x, dim=8192, key=KEY, cotangents="pntk", vmap_axes=0, projection="structured"
        )
        shapes = (jax.ShapeDtypeStruct(p, jnp.float32), jax.ShapeDtypeStruct(x, jnp.float32))
        memory = jax.jit(run).lower(*shapes).compile().memory_analysis()
        assert memory.temp_size_in_bytes < bound, (p, memory.temp_size_in_bytes)


@pytest.mark.parametrize(
    ("d_in", "d_out", "dim", "want"),
    [
        (384, 1152, 4096, (64, 64, None, 4096)),  # both random: √dim each
        (384, 10, 4096, (409, 10, "out", 4090)),  # ten logits kept exact
        (4, 6, 4096, (4, 1024, "in", 4096)),  # a tiny first layer: its input exact
        (1000, 1000, 4099, (65, 64, None, 4099)),  # a prime dim: the grid's first 4099
        (5, 7, 1, (1, 1, None, 1)),
    ],
)
def test_split(d_in, d_out, dim, want):
    s = kronecker_split(d_in, d_out, dim)
    assert (s.k_in, s.k_out, s.exact, s.columns) == want
    assert s.columns <= dim <= s.k_in * s.k_out or s.exact


def test_unknown_projection_names_structured():
    case = CASE["mlp"]
    with pytest.raises(ValueError, match="structured"):
        ntk_zoo.gradient_features(
            case.f, case.params, case.x1, dim=4, key=KEY, vmap_axes=0, projection="kron"
        )


def test_preconditioned_unbiased(monkeypatch):
    """``preconditioner=D``: ``E[Φ Φᵀ] = J D Jᵀ`` (the params reach their layers scaled by
    ``√D``, elementwise: those leaves are sketched, with the warning of
    ``test_elementwise_preconditioner_warns_scalar_keeps_kronecker``)."""
    monkeypatch.setattr(_warnings, "_WARNED", {_ELEMENTWISE_KEY})
    case, keys = CASE["mlp"], 200
    pre = jax.tree.map(lambda p: 0.5 + np.abs(p), case.params)
    exact = np.asarray(
        ntk_zoo.ntk_fn(case.f, vmap_axes=0, cotangents="pntk", preconditioner=pre)(
            case.x1, None, case.params
        )
    )
    est = _kernels_over_keys(case, keys, dim=24, cotangents="pntk", preconditioner=pre)
    mean, error = est.mean(0), est.std(0) / np.sqrt(keys)
    assert np.all(np.abs(mean - exact) <= 5 * error + 1e-12 * np.abs(exact).max())


def _reference_draws():
    """``_Draws`` drawing leaf by leaf, by the documented key scheme: leaf ``l``'s part ``q``'s
    ``P_in``, ``P_out``, sketch columns and signs from ``fold_in(fold_in(fold_in(key, l), q),
    0..3)``."""
    from ntk_zoo.structured import _kronecker

    class LeafByLeaf(_kronecker._Draws):
        def draw(self):
            for (slot, fold), (kind, shape, dtype, arg) in self.requests.items():
                owner, part = self.owner_parts[slot]
                k = jax.random.fold_in(jax.random.fold_in(self.key, owner), part)
                k = jax.random.fold_in(k, fold)
                self.values[(slot, fold)] = _kronecker._draw(k, kind, shape, dtype, arg)

    return _kronecker, LeafByLeaf


def general(params, x):
    """DenseGeneral's kernels over several axes, as attention's projections hold them: one
    input axis to (heads, head dim), then (heads, head dim) back to one axis."""
    h = jnp.tanh(jnp.einsum("ntc,chd->nthd", x, params["qkv"]) + params["qkv_bias"][None, None])
    h = jnp.tanh(_scaled(jnp.einsum("nthd,hdc->ntc", h, params["out"]), params["norm"]))
    return h.mean(1) @ params["head"]


GENERAL = Case(
    "general",
    general,
    {
        "qkv": _normal(0, 4, 2, 3, scale=0.5),
        "qkv_bias": _normal(1, 2, 3, scale=0.1),
        "out": _normal(2, 2, 3, 4, scale=0.5),
        "norm": 1 + _normal(3, 4, scale=0.1),
        "head": _normal(4, 4, 3, scale=0.5),
    },
    _normal(10, 3, 5, 4),
    _normal(11, 2, 5, 4),
)
CASE["general"] = GENERAL


# The zoo's ViT (its DenseGeneral kernels) was a case here: 19 s, nearly all the leaf-by-leaf
# reference's compile; `general` holds the same kind of leaves in a fraction of the time.
@pytest.mark.parametrize(("name", "dim"), [("mixed", 7), ("mixed", 24), ("general", 16)])
def test_draws_together_equal_leaf_by_leaf(name, dim, monkeypatch):
    """All leaves' keys and projections drawn at once (one draw per size, the sketches' as
    prefixes of one) give the features of drawing each leaf's from its own key (to float
    rounding)."""
    from ntk_zoo.features import _features as features_module

    case = CASE[name] if name in CASE else zoo_case(name)
    monkeypatch.setattr(features_module, "_PROGRAMS", {})
    together = np.asarray(_features(case, dim=dim))
    kronecker, reference = _reference_draws()
    monkeypatch.setattr(kronecker, "_Draws", reference)
    monkeypatch.setattr(features_module, "_PROGRAMS", {})
    leaf_by_leaf = np.asarray(_features(case, dim=dim))
    # the same draws; XLA may fuse the products that use them differently (float rounding)
    np.testing.assert_allclose(together, leaf_by_leaf, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("block", [None, 16])  # 16: the same-size normals in a loop of blocks
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_draws_equal_leaf_by_leaf(dtype, block, monkeypatch):
    """Normals of several sizes and shapes (``P_in``, ``P_out`` of one leaf sharing a draw),
    sketch columns and signs of several sizes (prefixes of one draw), and a leaf's second
    part: the values drawn from each leaf's own key — the hashes bitwise (columns, signs),
    the normals to a rounding of ``erf_inv`` (XLA vectorises it differently)."""
    kronecker, reference = _reference_draws()
    if block is not None:
        monkeypatch.setattr(kronecker, "DRAW_BLOCK", block)
    requests = [
        (0, 0, "normal", (5, 3), dtype, None),
        (0, 1, "normal", (3, 5), dtype, None),
        (1, 0, "normal", (7, 2), dtype, None),
        (2, 2, "randint", (4,), jnp.int32, 24),
        (2, 3, "rademacher", (4,), dtype, None),
        (3, 2, "randint", (9,), jnp.int32, 24),
        (3, 3, "rademacher", (9,), dtype, None),
    ]
    owner_parts = [(0, 0), (2, 0), (2, 1), (5, 0)]

    def values(cls, key):
        draws = cls(key, owner_parts)
        handles = [draws.request(*r) for r in requests]
        draws.draw()
        return [draws[h] for h in handles]

    got = jax.jit(lambda key: values(kronecker._Draws, key))(KEY)
    want = jax.jit(lambda key: values(reference, key))(KEY)
    eps = np.finfo(dtype).eps
    for g, w, r in zip(got, want, requests):
        assert g.shape == w.shape == r[3] and g.dtype == w.dtype
        if r[2] == "normal":
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=4 * eps, atol=4 * eps)
        else:
            np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def _random_eqns(depth: int) -> int:
    from ntk_zoo._compat import iter_eqns

    def f(params, x):
        for w, b in params:
            x = jnp.tanh(add_bias(x @ w, b))
        return x

    params = [(jnp.ones((6, 6)), jnp.zeros(6)) for _ in range(depth)]
    run = lambda p, x: ntk_zoo.gradient_features(
        f, p, x, dim=16, key=KEY, vmap_axes=0, projection="structured"
    )
    jaxpr = jax.make_jaxpr(run)(params, jnp.ones((2, 6)))
    return sum(eqn.primitive.name.startswith("random_") for eqn, _ in iter_eqns(jaxpr))


def test_draws_do_not_grow_with_depth():
    """The program draws each size once for all leaves (every PRNG hash is compiled as its own
    loop of kernels: drawn leaf by leaf they made compiling a ViT-S take 13 minutes)."""
    assert _random_eqns(2) == _random_eqns(6)


_ELEMENTWISE_KEY = (
    "elementwise preconditioner, structured features",
    ("['w0']", "['w1']", "['w2']"),
)


def test_elementwise_preconditioner_warns_scalar_keeps_kronecker(monkeypatch):
    """Issue 22 items 2-3: a scalar ``D`` per leaf (and a mask) keeps every dense leaf on the
    Kronecker projection, silently; an elementwise ``D`` sends its dense leaves to the
    CountSketch of their per-example gradient, and says so once, naming them."""
    monkeypatch.setattr(_warnings, "_WARNED", set())  # warn_once: as in a fresh process
    case = CASE["mlp"]
    seen = []
    real = _kronecker.kronecker_axes
    monkeypatch.setattr(
        _kronecker, "kronecker_axes", lambda leaf: seen.append(real(leaf)) or seen[-1]
    )
    dense = sorted(k for k, p in case.params.items() if np.ndim(p) == 2)
    assert dense == ["w0", "w1", "w2"]
    scalar = {k: 2.0 if k in dense else 1.0 for k in case.params}
    mask = {k: k in dense for k in case.params}
    for pre in (scalar, mask):
        seen.clear()
        _features(case, dim=16, cotangents="pntk", preconditioner=pre)  # no warning (errors)
        assert sum(axes is not None for axes in seen) >= 3, pre
    elementwise = {
        k: (np.full(np.shape(p), 2.0) if k in dense else 1.0) for k, p in case.params.items()
    }
    with pytest.warns(
        UserWarning, match=r"elementwise \(an array\) on \['w0'\], \['w1'\], \['w2'\];"
    ):
        _features(case, dim=16, cotangents="pntk", preconditioner=elementwise)
    assert _ELEMENTWISE_KEY in _warnings._WARNED
