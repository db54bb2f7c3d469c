"""A fully connected network (Flax linen)."""

from __future__ import annotations

import flax.linen as nn

from architectures._common import activation
from architectures.linen.layers import Dense


class MLP(nn.Module):
    depth: int = 2  # hidden layers
    width: int = 512
    num_classes: int = 10
    activation: str = "relu"
    parameterization: str = "ntk"
    bias: bool = True

    @nn.compact
    def __call__(self, x, train: bool = False):
        act = activation(self.activation)
        h = x.reshape(x.shape[0], -1)
        for _ in range(self.depth):
            h = act(Dense(self.width, self.parameterization, self.bias)(h))
        return Dense(self.num_classes, self.parameterization, self.bias)(h)
