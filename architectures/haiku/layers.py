"""Dense and convolution layers in NTK or standard parameterisation (Haiku)."""

from __future__ import annotations

import haiku as hk
import jax.numpy as jnp

from architectures._common import add_bias, conv2d, output_scale, weight_std


class Dense(hk.Module):
    def __init__(self, features, parameterization="ntk", use_bias=True, name=None):
        super().__init__(name=name)
        self.features, self.parameterization, self.use_bias = features, parameterization, use_bias

    def __call__(self, x):
        fan_in = x.shape[-1]
        init = hk.initializers.RandomNormal(weight_std(self.parameterization, fan_in))
        w = hk.get_parameter("w", (fan_in, self.features), x.dtype, init)
        y = x @ w * output_scale(self.parameterization, fan_in)
        if self.use_bias:
            y = add_bias(y, hk.get_parameter("b", (self.features,), x.dtype, jnp.zeros))
        return y


class Conv(hk.Module):
    def __init__(
        self, features, kernel_size=3, stride=1, parameterization="ntk", use_bias=False, name=None
    ):
        super().__init__(name=name)
        self.features, self.kernel_size, self.stride = features, kernel_size, stride
        self.parameterization, self.use_bias = parameterization, use_bias

    def __call__(self, x):
        k = self.kernel_size
        fan_in = k * k * x.shape[-1]
        init = hk.initializers.RandomNormal(weight_std(self.parameterization, fan_in))
        w = hk.get_parameter("w", (k, k, x.shape[-1], self.features), x.dtype, init)
        y = conv2d(x, w, self.stride) * output_scale(self.parameterization, fan_in)
        if self.use_bias:
            y = add_bias(y, hk.get_parameter("b", (self.features,), x.dtype, jnp.zeros))
        return y


def norm(kind: str, x, is_training: bool):
    if kind == "batch":
        return hk.BatchNorm(True, True, 0.9)(x, is_training)
    if kind == "layer":
        return hk.LayerNorm(-1, True, True)(x)
    if kind == "none":
        return x
    raise ValueError(f"norm must be 'batch', 'layer' or 'none', got {kind!r}.")
