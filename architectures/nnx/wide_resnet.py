"""WideResNet WRN-d-k with pre-activation blocks (Zagoruyko & Komodakis, 2016), Flax NNX."""

from __future__ import annotations

import jax
from flax import nnx

from architectures._common import wrn_blocks
from architectures.nnx.layers import Conv, Dense, apply_stacked, stacked
from architectures.nnx.layers import norm as make_norm


class Block(nnx.Module):
    def __init__(self, in_ch, features, stride, norm_kind, parameterization, *, rngs):
        self.norm1 = make_norm(norm_kind, in_ch, rngs)
        self.norm2 = make_norm(norm_kind, features, rngs)
        projection = in_ch != features or stride != 1
        self.shortcut = (
            Conv(in_ch, features, 1, stride, parameterization, rngs=rngs) if projection else None
        )
        self.conv1 = Conv(in_ch, features, 3, stride, parameterization, rngs=rngs)
        self.conv2 = Conv(features, features, 3, 1, parameterization, rngs=rngs)

    def __call__(self, x):
        h = jax.nn.relu(self.norm1(x))
        shortcut = x if self.shortcut is None else self.shortcut(h)
        h = jax.nn.relu(self.norm2(self.conv1(h)))
        return self.conv2(h) + shortcut


class WideResNet(nnx.Module):
    def __init__(
        self,
        input_shape,
        *,
        depth=28,
        width=10,
        num_classes=10,
        norm="batch",
        parameterization="standard",
        scan=False,
        rngs,
    ):
        n = wrn_blocks(depth)
        self.stem = Conv(input_shape[-1], 16, 3, 1, parameterization, rngs=rngs)
        blocks, stacks, ch = [], [], 16
        for group, stride in enumerate((1, 2, 2)):
            out = 16 * 2**group * width
            block = lambda i, s, r, o=out: Block(i, o, s, norm, parameterization, rngs=r)
            if scan:  # blocks[group]: the group's first block; stacks[group]: the others
                blocks.append(block(ch, stride, rngs))
                if n > 1:
                    stacks.append(stacked(n - 1, lambda r, o=out, b=block: b(o, 1, r), rngs))
            else:
                blocks += [
                    block(ch if i == 0 else out, stride if i == 0 else 1, rngs) for i in range(n)
                ]
            ch = out
        self.blocks = nnx.List(blocks)
        self.stacks = nnx.List(stacks)
        self.final_norm = make_norm(norm, ch, rngs)
        self.head = Dense(ch, num_classes, parameterization, rngs=rngs)

    def __call__(self, x):
        h = self.stem(x)
        for group, block in enumerate(self.blocks):
            h = block(h)
            if group < len(self.stacks):  # scanned: the rest of the group
                h = apply_stacked(self.stacks[group], h)
        return self.head(jax.nn.relu(self.final_norm(h)).mean(axis=(1, 2)))
