"""The zoo: shapes, published parameter counts, framework agreement, exact NTKs, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import architectures
import ntk_zoo
from architectures._common import decode_vit_variant, wrn_blocks
from tests.cases import ZOO_IDS, ZOO_MODELS, zoo_case
from tests.oracle import oracle_ntk, rel_error

FAMILY_CONFIGS = {
    "mlp": {"family": "mlp", "depth": 2, "width": 8},
    "wide_resnet": {"family": "wide_resnet", "depth": 10, "width": 1, "norm": "layer"},
    "vit": {"family": "vit", "variant": "test/2", "pool": "gap"},
}


@pytest.mark.parametrize("framework", architectures.FRAMEWORKS)
@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
def test_output_shapes(family, framework):
    config = {**FAMILY_CONFIGS[family], "framework": framework, "num_classes": 7}
    pure = architectures.build(config, key=jax.random.key(0), input_shape=(8, 8, 1))
    assert jax.jit(pure.apply)(pure.params, jnp.ones((3, 8, 8, 1))).shape == (3, 7)


@pytest.mark.parametrize(
    "config,input_shape,published",
    [
        (
            {"family": "wide_resnet", "depth": 28, "width": 10, "num_classes": 10},
            (32, 32, 3),
            36.5e6,
        ),  # WRN-28-10 on CIFAR-10 (Zagoruyko & Komodakis, 2016)
        (
            {"family": "vit", "variant": "B/16", "num_classes": 1000},
            (224, 224, 3),
            86.6e6,
        ),  # ViT-B/16 (Dosovitskiy et al., 2021)
        (
            {"family": "vit", "variant": "S/16", "num_classes": 1000},
            (224, 224, 3),
            22.1e6,
        ),  # DeiT-S (Touvron et al., 2021)
    ],
    ids=["WRN-28-10", "ViT-B16", "ViT-S16"],
)
def test_parameter_counts_match_published_and_agree_across_frameworks(
    config, input_shape, published
):
    counts = {
        fw: architectures.param_count({**config, "framework": fw}, input_shape)
        for fw in architectures.FRAMEWORKS
    }
    assert len(set(counts.values())) == 1, counts
    assert abs(counts["linen"] - published) / published < 0.005, counts


def test_vit_class_token_and_intermediates():
    config = {"family": "vit", "variant": "test/2", "intermediates": True, "num_classes": 4}
    for framework in architectures.FRAMEWORKS:
        pure = architectures.build(
            {**config, "framework": framework}, key=jax.random.key(0), input_shape=(4, 4, 1)
        )
        logits = jax.jit(pure.apply)(pure.params, jnp.ones((2, 4, 4, 1)))
        assert logits.shape == (2, 4)  # logits only


# One xdist group per zoo model: the tests of one model run in one worker, which builds the model
# and its float64 oracle once (both cached per process).
ZOO_GROUPED = [pytest.param(c, marks=pytest.mark.xdist_group(f"zoo-{c}")) for c in ZOO_IDS]


# The engine's axes, vmap and x2=None paths are swept on tests/cases.py; here each zoo model is
# checked per method with per-example Jacobians and distinct x1, x2.
# (auto is exercised on tests/cases.py; here it would repeat one of the methods' computations)
@pytest.mark.parametrize(
    "method", ["jacobian_contraction", "ntk_vector_products", "structured_derivatives"]
)
@pytest.mark.parametrize("case_id", ZOO_GROUPED)
def test_zoo_ntk_matches_oracle(case_id, method):
    case = zoo_case(case_id)
    got = jax.jit(ntk_zoo.ntk_fn(case.f, method=method, vmap_axes=0))(case.x1, case.x2, case.params)
    assert rel_error(got, oracle_ntk(case.f, case.x1, case.x2, case.params)) <= 1e-10


def test_unknown_family_or_framework_lists_valid_names():
    with pytest.raises(ValueError, match=r"valid families: \['mlp', 'vit', 'wide_resnet'\]"):
        architectures.build({"family": "resnet"}, key=jax.random.key(0), input_shape=(4,))
    with pytest.raises(ValueError, match=r"valid frameworks: \('linen', 'nnx', 'haiku'\)"):
        architectures.build(
            {"family": "mlp", "framework": "torch"}, key=jax.random.key(0), input_shape=(4,)
        )


def _vit_params(width, depth, mlp_dim, patch, channels, tokens, num_classes, pool):
    """A ViT's parameter count by hand: embedding, class token, positions, blocks, head."""
    block = 2 * 2 * width + 4 * (width * width + width) + 2 * width * mlp_dim + mlp_dim + width
    return (
        patch * patch * channels * width
        + width
        + (width if pool == "tok" else 0)
        + (tokens + (pool == "tok")) * width
        + depth * block
        + 2 * width
        + width * num_classes
        + num_classes
    )


@pytest.mark.parametrize(
    "knobs",
    [
        {},
        {"depth": 3},
        {"width": 24, "heads": 3},
        {"depth": 1, "width": 32, "heads": 4, "mlp_dim": 8},
    ],
    ids=["named", "depth", "width-heads", "all"],
)
def test_vit_knobs_in_every_framework(knobs):
    config = {"family": "vit", "variant": "test/2", "num_classes": 5, "pool": "tok", **knobs}
    v = decode_vit_variant("test/2", **knobs)
    assert all(getattr(v, k) == value for k, value in knobs.items())
    want = _vit_params(v.width, v.depth, v.mlp_dim, 2, 1, 4, 5, "tok")  # 4x4 image, 2x2 patches
    for framework in architectures.FRAMEWORKS:
        config = {**config, "framework": framework}
        assert architectures.param_count(config, (4, 4, 1)) == want, framework
        if len(knobs) == 4:  # built and run once per framework
            pure = architectures.build(config, key=jax.random.key(0), input_shape=(4, 4, 1))
            assert sum(a.size for a in jax.tree.leaves(pure.params)) == want, framework
            assert jax.jit(pure.apply)(pure.params, jnp.ones((2, 4, 4, 1))).shape == (2, 5)


def test_named_vit_sizes_keep_published_counts_with_explicit_knobs():
    # ViT-B/16 at 224x224 (86.6M, Dosovitskiy et al., 2021): the hand count, and the same model
    # when its size is spelled out through the knobs.
    b16 = _vit_params(768, 12, 3072, 16, 3, 14 * 14, 1000, "tok")
    assert b16 == 86_567_656
    explicit = {"depth": 12, "width": 768, "heads": 12, "mlp_dim": 3072}
    config = {"family": "vit", "variant": "B/16", "num_classes": 1000}
    for framework in architectures.FRAMEWORKS:  # (without knobs: the test above)
        count = architectures.param_count(
            {**config, **explicit, "framework": framework}, (224, 224, 3)
        )
        assert count == b16, framework
    assert architectures.param_count({**config, **dict.fromkeys(explicit, 0)}, (224, 224, 3)) == b16
    # ViT-B/16's width with ViT-S's depth: 6 blocks fewer, each 7,087,872 params.
    assert architectures.param_count({**config, "depth": 6}, (224, 224, 3)) == b16 - 6 * 7_087_872
    # ViT-B's patches with ViT-L's depth, width, heads and MLP are ViT-L/16.
    large = {"depth": 24, "width": 1024, "heads": 16, "mlp_dim": 4096}
    l16 = {"family": "vit", "variant": "L/16", "num_classes": 1000}
    count = architectures.param_count({**config, **large}, (224, 224, 3))
    want = _vit_params(1024, 24, 4096, 16, 3, 14 * 14, 1000, "tok")  # 304,326,632
    assert count == architectures.param_count(l16, (224, 224, 3)) == want


@pytest.mark.parametrize("case_id", ZOO_GROUPED)
def test_default_init_equals_the_frameworks_own(case_id):
    # zoo_case builds with the default (lazy) initialisation; "eager" is the framework's own,
    # forward pass included: the same values, bit for bit.
    case = zoo_case(case_id)
    model, framework = case_id.split("-")
    config = {**ZOO_MODELS[model], "framework": framework}
    eager = architectures.build(
        config, key=jax.random.key(0), input_shape=(4, 4, 1), dtype=jnp.float64, init="eager"
    )
    assert jax.tree.structure(case.params) == jax.tree.structure(eager.params)
    for a, b in zip(jax.tree.leaves(case.params), jax.tree.leaves(eager.params), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    if model == "wrn":  # BatchNorm statistics are not params: they enter the outputs
        pairs = ((case.f, case.params), (eager.apply, eager.params))
        got, want = (jax.jit(f)(params, case.x1) for f, params in pairs)
        np.testing.assert_array_equal(got, want)


def test_jitted_init_equals_the_frameworks_own_up_to_rounding():
    config = {**ZOO_MODELS["vit"], "framework": "linen"}  # std 0.02 and 1/sqrt(32): inexact
    jit, eager = (
        architectures.build(config, key=jax.random.key(0), input_shape=(4, 4, 1), init=init)
        for init in ("jit", "eager")
    )
    for a, b in zip(jax.tree.leaves(jit.params), jax.tree.leaves(eager.params), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=2**-22, atol=0)  # XLA fuses draw and scale
    with pytest.raises(ValueError, match="Unknown init 'fast'"):
        architectures.build(config, key=jax.random.key(0), input_shape=(4, 4, 1), init="fast")


def test_variant_and_depth_errors():
    assert decode_vit_variant("B/16") == (768, 12, 3072, 12, 16)
    with pytest.raises(ValueError, match="Unknown ViT variant"):
        decode_vit_variant("XL/16")
    with pytest.raises(ValueError, match="multiple of heads 5"):
        decode_vit_variant("test/2", heads=5)
    with pytest.raises(ValueError, match="depth must be positive"):
        decode_vit_variant("test/2", depth=-1)
    with pytest.raises(ValueError, match="mlp_dim must be an int"):
        decode_vit_variant("test/2", mlp_dim=2.5)
    with pytest.raises(ValueError, match="multiple of heads"):
        architectures.build(
            {"family": "vit", "variant": "test/2", "width": 10, "heads": 4},
            key=jax.random.key(0),
            input_shape=(4, 4, 1),
        )
    assert wrn_blocks(28) == 4
    with pytest.raises(ValueError, match="6·n \\+ 4"):
        wrn_blocks(12)
