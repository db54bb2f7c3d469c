"""Dense and convolution layers in NTK or standard parameterisation (Flax linen)."""

from __future__ import annotations

import flax.linen as nn

from architectures._common import add_bias, conv2d, output_scale, weight_std


class Dense(nn.Module):
    features: int
    parameterization: str = "ntk"
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        fan_in = x.shape[-1]
        std = weight_std(self.parameterization, fan_in)
        kernel = self.param("kernel", nn.initializers.normal(std), (fan_in, self.features))
        y = x @ kernel * output_scale(self.parameterization, fan_in)
        if self.use_bias:
            y = add_bias(y, self.param("bias", nn.initializers.zeros, (self.features,)))
        return y


class Conv(nn.Module):
    features: int
    kernel_size: int = 3
    stride: int = 1
    parameterization: str = "ntk"
    use_bias: bool = False

    @nn.compact
    def __call__(self, x):
        k, fan_in = self.kernel_size, self.kernel_size**2 * x.shape[-1]
        shape = (k, k, x.shape[-1], self.features)
        kernel = self.param(
            "kernel", nn.initializers.normal(weight_std(self.parameterization, fan_in)), shape
        )
        y = conv2d(x, kernel, self.stride) * output_scale(self.parameterization, fan_in)
        if self.use_bias:
            y = add_bias(y, self.param("bias", nn.initializers.zeros, (self.features,)))
        return y


def norm(kind: str, train: bool):
    if kind == "batch":
        return nn.BatchNorm(use_running_average=not train, momentum=0.9)
    if kind == "layer":
        return nn.LayerNorm()
    if kind == "none":
        return lambda x: x
    raise ValueError(f"norm must be 'batch', 'layer' or 'none', got {kind!r}.")
