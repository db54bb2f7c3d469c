"""A fully connected network (Flax NNX)."""

from __future__ import annotations

import itertools
import math

from flax import nnx

from architectures import _common
from architectures.nnx.layers import Dense


class MLP(nnx.Module):
    def __init__(
        self,
        input_shape,
        *,
        depth=2,
        width=512,
        num_classes=10,
        activation="relu",
        parameterization="ntk",
        bias=True,
        rngs,
    ):
        dims = [math.prod(input_shape), *([width] * depth)]
        self.hidden = nnx.List(
            [Dense(a, b, parameterization, bias, rngs=rngs) for a, b in itertools.pairwise(dims)]
        )
        self.head = Dense(dims[-1], num_classes, parameterization, bias, rngs=rngs)
        self.act = _common.activation(activation)

    def __call__(self, x):
        h = x.reshape(x.shape[0], -1)
        for layer in self.hidden:
            h = self.act(layer(h))
        return self.head(h)
