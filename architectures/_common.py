"""What the zoo's three frameworks share: parameterisations, ViT variants, activations."""

from __future__ import annotations

import math
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp

ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "gelu": jax.nn.gelu, "erf": jax.lax.erf}
PARAMETERIZATIONS = ("ntk", "standard")


def check_parameterization(name: str) -> str:
    if name not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {name!r}.")
    return name


def weight_std(parameterization: str, fan_in: int) -> float:
    """Init std of a weight: 1 in NTK parameterisation, 1/sqrt(fan_in) in standard."""
    return 1.0 if parameterization == "ntk" else 1.0 / math.sqrt(fan_in)


def output_scale(parameterization: str, fan_in: int) -> float:
    """Multiplier on a layer's output: 1/sqrt(fan_in) in NTK parameterisation, 1 in standard."""
    return 1.0 / math.sqrt(fan_in) if parameterization == "ntk" else 1.0


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}.")
    return ACTIVATIONS[name]


class ViTVariant(NamedTuple):
    width: int
    depth: int
    mlp_dim: int
    heads: int
    patch: int


# Dosovitskiy et al. (2021), Table 1, and Touvron et al. (2021) for Ti and S; "test" is ours.
VIT_SIZES = {
    "test": (16, 2, 32, 2),
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
}


def decode_vit_variant(variant: str) -> ViTVariant:
    """``"B/16"`` -> width 768, depth 12, MLP 3072, 12 heads, 16×16 patches."""
    match = re.fullmatch(r"(\w+)/(\d+)", variant)
    if not match or match.group(1) not in VIT_SIZES:
        raise ValueError(
            f"Unknown ViT variant {variant!r}; use '<size>/<patch>' with size in "
            f"{sorted(VIT_SIZES)}, e.g. 'B/16' or 'test/2'."
        )
    return ViTVariant(*VIT_SIZES[match.group(1)], int(match.group(2)))


def wrn_blocks(depth: int) -> int:
    """Blocks per group of a WRN-depth-k: ``(depth - 4) / 6``."""
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(
            f"WideResNet depth must be 6·n + 4 with n >= 1 (10, 16, 22, 28, …), got {depth}."
        )
    return (depth - 4) // 6


def conv2d(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """A "SAME" NHWC convolution with an HWIO kernel, in the promoted dtype of both."""
    dtype = jnp.result_type(x, kernel)
    return jax.lax.conv_general_dilated(
        x.astype(dtype),
        kernel.astype(dtype),
        (stride, stride),
        "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
