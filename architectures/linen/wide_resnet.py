"""WideResNet WRN-d-k with pre-activation blocks (Zagoruyko & Komodakis, 2016), Flax linen."""

from __future__ import annotations

import flax.linen as nn
import jax

from architectures._common import wrn_blocks
from architectures.linen.layers import Conv, Dense, norm


class Block(nn.Module):
    features: int
    stride: int
    norm: str
    parameterization: str

    @nn.compact
    def __call__(self, x, train: bool):
        h = jax.nn.relu(norm(self.norm, train)(x))
        shortcut = x
        if x.shape[-1] != self.features or self.stride != 1:
            shortcut = Conv(self.features, 1, self.stride, self.parameterization)(h)
        h = Conv(self.features, 3, self.stride, self.parameterization)(h)
        h = jax.nn.relu(norm(self.norm, train)(h))
        return Conv(self.features, 3, 1, self.parameterization)(h) + shortcut


class WideResNet(nn.Module):
    depth: int = 28
    width: int = 10
    num_classes: int = 10
    norm: str = "batch"
    parameterization: str = "standard"

    @nn.compact
    def __call__(self, x, train: bool = False):
        n = wrn_blocks(self.depth)
        h = Conv(16, 3, 1, self.parameterization)(x)
        for group, stride in enumerate((1, 2, 2)):
            for i in range(n):
                h = Block(
                    16 * 2**group * self.width,
                    stride if i == 0 else 1,
                    self.norm,
                    self.parameterization,
                )(h, train)
        h = jax.nn.relu(norm(self.norm, train)(h)).mean(axis=(1, 2))
        return Dense(self.num_classes, self.parameterization)(h)
