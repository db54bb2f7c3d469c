"""Flax linen, Flax NNX and Haiku models as ``PureFn``; each framework is imported on use."""

from ntk_zoo.adapters._haiku import from_haiku as from_haiku
from ntk_zoo.adapters._linen import from_linen as from_linen
from ntk_zoo.adapters._nnx import from_nnx as from_nnx

__all__ = ["from_haiku", "from_linen", "from_nnx"]
