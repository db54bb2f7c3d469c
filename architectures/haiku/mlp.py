"""A fully connected network (Haiku)."""

from __future__ import annotations

import haiku as hk

from architectures._common import activation as get_activation
from architectures.haiku.layers import Dense


class MLP(hk.Module):
    def __init__(
        self,
        depth=2,
        width=512,
        num_classes=10,
        activation="relu",
        parameterization="ntk",
        bias=True,
        name=None,
    ):
        super().__init__(name=name)
        self.depth, self.width, self.num_classes = depth, width, num_classes
        self.act = get_activation(activation)
        self.parameterization, self.bias = parameterization, bias

    def __call__(self, x, is_training=False):
        h = x.reshape(x.shape[0], -1)
        for _ in range(self.depth):
            h = self.act(Dense(self.width, self.parameterization, self.bias)(h))
        return Dense(self.num_classes, self.parameterization, self.bias)(h)
