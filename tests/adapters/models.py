"""One two-layer tanh MLP (4 → 6 → 3, float64) as Flax linen ``Dense`` and NNX ``Linear``
layers: the adapters' tests and the structured Gram-sharing tests use the same models."""

import flax.linen as nn
import jax.numpy as jnp
from flax import nnx


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = jnp.tanh(nn.Dense(6, param_dtype=jnp.float64)(x))
        return nn.Dense(3, param_dtype=jnp.float64)(h)


class NNXMLP(nnx.Module):
    def __init__(self, rngs):
        self.l0 = nnx.Linear(4, 6, param_dtype=jnp.float64, rngs=rngs)
        self.l1 = nnx.Linear(6, 3, param_dtype=jnp.float64, rngs=rngs)

    def __call__(self, x):
        return self.l1(jnp.tanh(self.l0(x)))
