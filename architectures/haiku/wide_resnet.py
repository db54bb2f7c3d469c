"""WideResNet WRN-d-k with pre-activation blocks (Zagoruyko & Komodakis, 2016), Haiku."""

from __future__ import annotations

import haiku as hk
import jax

from architectures._common import wrn_blocks
from architectures.haiku.layers import Conv, Dense, norm


class Block(hk.Module):
    def __init__(self, features, stride, norm_kind, parameterization, name=None):
        super().__init__(name=name)
        self.features, self.stride = features, stride
        self.norm, self.parameterization = norm_kind, parameterization

    def __call__(self, x, is_training):
        p = self.parameterization
        h = jax.nn.relu(norm(self.norm, x, is_training))
        shortcut = x
        if x.shape[-1] != self.features or self.stride != 1:
            shortcut = Conv(self.features, 1, self.stride, p, name="shortcut")(h)
        h = Conv(self.features, 3, self.stride, p, name="conv1")(h)
        h = jax.nn.relu(norm(self.norm, h, is_training))
        return Conv(self.features, 3, 1, p, name="conv2")(h) + shortcut


class WideResNet(hk.Module):
    def __init__(
        self,
        depth=28,
        width=10,
        num_classes=10,
        norm="batch",
        parameterization="standard",
        name=None,
    ):
        super().__init__(name=name)
        self.blocks, self.width, self.num_classes = wrn_blocks(depth), width, num_classes
        self.norm, self.parameterization = norm, parameterization

    def __call__(self, x, is_training=False):
        h = Conv(16, 3, 1, self.parameterization, name="stem")(x)
        for group, stride in enumerate((1, 2, 2)):
            for i in range(self.blocks):
                h = Block(
                    16 * 2**group * self.width,
                    stride if i == 0 else 1,
                    self.norm,
                    self.parameterization,
                )(h, is_training)
        h = jax.nn.relu(norm(self.norm, h, is_training)).mean(axis=(1, 2))
        return Dense(self.num_classes, self.parameterization, name="head")(h)
