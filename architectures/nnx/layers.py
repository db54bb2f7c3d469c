"""Dense and convolution layers in NTK or standard parameterisation (Flax NNX)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from architectures._common import add_bias, conv2d, output_scale, weight_std


class Dense(nnx.Module):
    def __init__(self, fan_in, features, parameterization="ntk", use_bias=True, *, rngs):
        std = weight_std(parameterization, fan_in)
        self.kernel = nnx.Param(
            std * jax.random.normal(rngs.params(), (fan_in, features), jnp.float32)
        )
        self.bias = nnx.Param(jnp.zeros((features,), jnp.float32)) if use_bias else None
        self.scale = output_scale(parameterization, fan_in)

    def __call__(self, x):
        y = x @ self.kernel[...] * self.scale
        return y if self.bias is None else add_bias(y, self.bias[...])


class Conv(nnx.Module):
    def __init__(
        self,
        in_ch,
        features,
        kernel_size=3,
        stride=1,
        parameterization="ntk",
        use_bias=False,
        *,
        rngs,
    ):
        fan_in = kernel_size**2 * in_ch
        shape = (kernel_size, kernel_size, in_ch, features)
        std = weight_std(parameterization, fan_in)
        self.kernel = nnx.Param(std * jax.random.normal(rngs.params(), shape, jnp.float32))
        self.bias = nnx.Param(jnp.zeros((features,), jnp.float32)) if use_bias else None
        self.stride, self.scale = stride, output_scale(parameterization, fan_in)

    def __call__(self, x):
        y = conv2d(x, self.kernel[...], self.stride) * self.scale
        return y if self.bias is None else add_bias(y, self.bias[...])


def norm(kind: str, channels: int, rngs):
    if kind == "batch":
        return nnx.BatchNorm(channels, momentum=0.9, use_running_average=True, rngs=rngs)
    if kind == "layer":
        return nnx.LayerNorm(channels, rngs=rngs)
    if kind == "none":
        return lambda x: x
    raise ValueError(f"norm must be 'batch', 'layer' or 'none', got {kind!r}.")


def stacked(count: int, make, rngs):
    """``count`` modules ``make(rngs)`` as one module whose params have a leading layer axis.

    The NNX idiom for scanned layers: ``nnx.vmap`` over split keys builds the stack;
    :func:`apply_stacked` applies it with ``nnx.scan``.
    """

    @nnx.split_rngs(splits=count)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def create(rngs):
        return make(rngs)

    return create(rngs)


def apply_stacked(stack, x, *, every: bool = False):
    """Runs the layers of a :func:`stacked` module in turn (``nnx.scan``).

    Returns the last layer's output, or with ``every=True`` also every layer's output stacked.
    """

    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0) if every else nnx.Carry)
    def layer(h, module):
        h = module(h)
        return (h, h) if every else h

    return layer(x, stack)
