"""Plain-JAX models: ``init(key, ...) -> params`` and ``apply(params, x)``."""

from architectures.jax.mlp import apply as mlp_apply
from architectures.jax.mlp import init as mlp_init

__all__ = ["mlp_apply", "mlp_init"]
