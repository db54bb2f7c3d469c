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
    # Each group's blocks after its first (same shapes: no stride, no projection) stacked along
    # a leading layer axis and applied with nn.scan: "Block_<k>" for the first block of each
    # group (k as when unrolled), "group<g>_blocks" for the stack of the others.
    scan: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        n = wrn_blocks(self.depth)
        h = Conv(16, 3, 1, self.parameterization)(x)
        for group, stride in enumerate((1, 2, 2)):
            features = 16 * 2**group * self.width
            block = lambda s, name=None, f=features: Block(
                f, s, self.norm, self.parameterization, name=name
            )
            if not self.scan:
                for i in range(n):
                    h = block(stride if i == 0 else 1)(h, train)
                continue
            h = block(stride, f"Block_{group * n}")(h, train)
            if n > 1:
                stack = nn.scan(
                    lambda b, h, _: (b(h, train), None),
                    variable_axes={"params": 0, "batch_stats": 0},
                    split_rngs={"params": True},
                    length=n - 1,
                )
                h, _ = stack(block(1, f"group{group}_blocks"), h, None)
        h = jax.nn.relu(norm(self.norm, train)(h)).mean(axis=(1, 2))
        return Dense(self.num_classes, self.parameterization)(h)
