"""The architecture zoo: MLP, WideResNet and ViT in Flax linen, Flax NNX and Haiku.

``build(model_config, key=..., input_shape=...)`` returns an ``ntk_zoo.PureFn``;
``param_count`` counts parameters from shapes alone. ``architectures.jax`` holds plain-JAX
models.
"""

from architectures._build import FAMILIES as FAMILIES
from architectures._build import FRAMEWORKS as FRAMEWORKS
from architectures._build import INIT_MODES as INIT_MODES
from architectures._build import build as build
from architectures._build import param_count as param_count

__all__ = ["FAMILIES", "FRAMEWORKS", "INIT_MODES", "build", "param_count"]
