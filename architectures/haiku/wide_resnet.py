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
        scan=False,
        name=None,
    ):
        super().__init__(name=name)
        self.blocks, self.width, self.num_classes = wrn_blocks(depth), width, num_classes
        self.norm, self.parameterization, self.scan = norm, parameterization, scan

    def __call__(self, x, is_training=False):
        h = Conv(16, 3, 1, self.parameterization, name="stem")(x)
        n = self.blocks
        for group, stride in enumerate((1, 2, 2)):
            features = 16 * 2**group * self.width
            block = lambda s, name=None, f=features: Block(
                f, s, self.norm, self.parameterization, name=name
            )
            if not self.scan:
                for i in range(n):
                    h = block(stride if i == 0 else 1)(h, is_training)
                continue
            # The group's first block under its unrolled name; the others stacked.
            h = block(stride, "block" + (f"_{group * n}" if group else ""))(h, is_training)
            if n > 1:
                stack = hk.layer_stack(n - 1, name=f"group{group}_blocks")
                h = stack(lambda h, b=block: b(1)(h, is_training))(h)
        h = jax.nn.relu(norm(self.norm, h, is_training)).mean(axis=(1, 2))
        return Dense(self.num_classes, self.parameterization, name="head")(h)
