"""The zoo: shapes, published parameter counts, framework agreement, exact NTKs, errors."""

import jax
import jax.numpy as jnp
import pytest

import architectures
import ntk_zoo
from architectures._common import decode_vit_variant, wrn_blocks
from tests.cases import ZOO_IDS, zoo_case
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
    assert pure.apply(pure.params, jnp.ones((3, 8, 8, 1))).shape == (3, 7)


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
        assert pure.apply(pure.params, jnp.ones((2, 4, 4, 1))).shape == (2, 4)  # logits only


# The engine's axes, vmap and x2=None paths are swept on tests/cases.py; here each zoo model is
# checked per method with per-example Jacobians and distinct x1, x2.
# (auto is exercised on tests/cases.py; here it would repeat one of the methods' computations)
@pytest.mark.parametrize(
    "method", ["jacobian_contraction", "ntk_vector_products", "structured_derivatives"]
)
@pytest.mark.parametrize("case_id", ZOO_IDS)
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


def test_variant_and_depth_errors():
    assert decode_vit_variant("B/16") == (768, 12, 3072, 12, 16)
    with pytest.raises(ValueError, match="Unknown ViT variant"):
        decode_vit_variant("XL/16")
    assert wrn_blocks(28) == 4
    with pytest.raises(ValueError, match="6·n \\+ 4"):
        wrn_blocks(12)
