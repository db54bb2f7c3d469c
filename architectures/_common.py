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
    """``name`` if it is a known parameterisation (``ntk`` or ``standard``), else a ValueError."""
    if name not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {name!r}.")
    return name


def weight_std(parameterization: str, fan_in: int) -> float:
    """Init std of a weight: 1 in NTK parameterisation, 1/sqrt(fan_in) in standard."""
    check_parameterization(parameterization)
    return 1.0 if parameterization == "ntk" else 1.0 / math.sqrt(fan_in)


def output_scale(parameterization: str, fan_in: int) -> float:
    """Multiplier on a layer's output: 1/sqrt(fan_in) in NTK parameterisation, 1 in standard."""
    return 1.0 / math.sqrt(fan_in) if parameterization == "ntk" else 1.0


def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
    """``y + bias`` over ``y``'s trailing axes, broadcast explicitly (strict rank promotion).

    ``expand_dims`` traces to the ``broadcast_in_dim`` that implicit broadcasting makes, the
    form whose cotangent structured derivatives share with the layer's weight (a ``reshape``,
    as in ``flax.linen.Dense``, is not shared under ``vmap``)."""
    return y + jnp.expand_dims(bias, tuple(range(y.ndim - bias.ndim)))


def activation(name: str):
    """The activation function called ``name`` (a key of ``ACTIVATIONS``)."""
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
# Each size is (width, depth, mlp_dim, heads).
VIT_SIZES = {
    "test": (16, 2, 32, 2),
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
}


def decode_vit_variant(
    variant: str,
    *,
    depth: int | None = None,
    width: int | None = None,
    heads: int | None = None,
    mlp_dim: int | None = None,
) -> ViTVariant:
    """The shape of a ViT: a named ``"<size>/<patch>"`` variant, with optional overrides.

    The one place where a ViT's configuration is decoded (the linen, NNX and Haiku ViTs all call
    it). ``depth`` (encoder blocks), ``width`` (token dimension), ``heads`` and ``mlp_dim``
    replace the named size's values when given (``None`` or ``0``: the size's own); ``width``
    must be a multiple of ``heads``.

    Example:
      >>> decode_vit_variant("B/16")
      ViTVariant(width=768, depth=12, mlp_dim=3072, heads=12, patch=16)
      >>> decode_vit_variant("test/2", depth=3, width=24, heads=3)
      ViTVariant(width=24, depth=3, mlp_dim=32, heads=3, patch=2)
    """
    match = re.fullmatch(r"(\w+)/(\d+)", variant)
    if not match or match.group(1) not in VIT_SIZES:
        raise ValueError(
            f"Unknown ViT variant {variant!r}; use '<size>/<patch>' with size in "
            f"{sorted(VIT_SIZES)}, e.g. 'B/16' or 'test/2'."
        )
    named = ViTVariant(*VIT_SIZES[match.group(1)], int(match.group(2)))
    overrides = {"depth": depth, "width": width, "heads": heads, "mlp_dim": mlp_dim}
    for name, value in overrides.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"ViT {name} must be an int (0: the size's own), got {value!r}.")
        if value is not None and value < 0:
            raise ValueError(f"ViT {name} must be positive (0: the size's own), got {value}.")
    v = named._replace(**{k: value for k, value in overrides.items() if value})
    if v.patch < 1:
        raise ValueError(f"ViT patch size must be positive, got {variant!r}.")
    if v.width % v.heads:
        raise ValueError(
            f"ViT width {v.width} must be a multiple of heads {v.heads} (each head gets "
            f"width / heads dimensions); change width or heads."
        )
    return v


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
