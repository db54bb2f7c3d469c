"""``build(model_config)``: one entry point from a config to a ``PureFn`` in any framework."""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

import ntk_zoo

FAMILIES = {"mlp": "MLP", "wide_resnet": "WideResNet", "vit": "ViT"}
FRAMEWORKS = ("linen", "nnx", "haiku")
# Config keys each family's constructor takes (everything else in the config is ignored).
FAMILY_KEYS = {
    "mlp": ("depth", "width", "num_classes", "activation", "parameterization", "bias"),
    "wide_resnet": ("depth", "width", "num_classes", "norm", "parameterization"),
    "vit": ("variant", "num_classes", "pool", "intermediates"),
}


def _model_class(family: str, framework: str) -> type:
    if family not in FAMILIES:
        raise ValueError(f"Unknown model family {family!r}; valid families: {sorted(FAMILIES)}.")
    if framework not in FRAMEWORKS:
        raise ValueError(f"Unknown framework {framework!r}; valid frameworks: {FRAMEWORKS}.")
    module = importlib.import_module(f"architectures.{framework}.{family}")
    return getattr(module, FAMILIES[family])


def _kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: config[k] for k in FAMILY_KEYS[config["family"]] if k in config}


def _init(config: Mapping[str, Any], key: jax.Array, input_shape: tuple[int, ...]):
    """(framework object, raw variables) at initialisation, in the framework's own terms."""
    family, framework = config["family"], config.get("framework", "linen")
    cls, kwargs = _model_class(family, framework), _kwargs(config)
    x = jnp.zeros((1, *input_shape), jnp.float32)
    if framework == "linen":
        module = cls(**kwargs)
        return module, module.init(key, x, train=False)
    if framework == "nnx":
        from flax import nnx

        return None, cls(tuple(input_shape), **kwargs, rngs=nnx.Rngs(key))
    import haiku as hk

    transformed = hk.without_apply_rng(
        hk.transform_with_state(lambda x, is_training=False: cls(**kwargs)(x, is_training))
    )
    # Haiku creates BatchNorm's moving averages only in training mode; start them, as Flax
    # does, at mean 0 and variance 1.
    params, state = transformed.init(key, x, is_training=True)
    state = {
        name: {
            k: (
                jnp.ones_like(v)
                if name.endswith("var_ema") and k != "counter"
                else jnp.zeros_like(v)
            )
            for k, v in entries.items()
        }
        for name, entries in state.items()
    }
    return transformed, (params, state)


def build(
    model_config: Mapping[str, Any],
    *,
    key: jax.Array,
    input_shape: tuple[int, ...],
    calibration: jax.Array | None = None,
    dtype: Any = None,
) -> ntk_zoo.PureFn:
    """Builds and initialises a zoo model as a :class:`ntk_zoo.PureFn`.

    Args:
      model_config: ``family`` (``mlp | wide_resnet | vit``), ``framework``
        (``linen | nnx | haiku``, default linen), the family's settings (see ``FAMILY_KEYS``),
        and optionally ``batch_norm`` (the BatchNorm policy: ``running | batch | coupled``).
      key: PRNG key for the initialisation.
      input_shape: the shape of one example, e.g. ``(8, 8, 1)``.
      calibration: the batch whose statistics ``batch_norm="batch"`` freezes.
      dtype: cast every float variable to this dtype (e.g. float64 for exact checks).

    Example:
      >>> import jax, architectures
      >>> config = {"family": "mlp", "framework": "haiku", "depth": 1, "width": 8}
      >>> pure = architectures.build(config, key=jax.random.key(0), input_shape=(4,))
      >>> pure.apply(pure.params, jax.numpy.ones((2, 4))).shape
      (2, 10)
    """
    framework = model_config.get("framework", "linen")
    obj, variables = _init(model_config, key, tuple(input_shape))
    if dtype is not None:  # every float variable, BatchNorm statistics included
        cast = lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a
        if framework == "nnx":
            from flax import nnx

            nnx.update(variables, jax.tree.map(cast, nnx.state(variables)))
        else:
            variables = jax.tree.map(cast, variables)
    policy = dict(
        batch_norm=model_config.get("batch_norm", "running"),
        calibration=calibration,
        output=0 if model_config.get("intermediates", False) else None,
    )
    if framework == "linen":
        pure = ntk_zoo.from_linen(
            obj, variables, train=False, train_kwargs={"train": True}, **policy
        )
    elif framework == "nnx":
        pure = ntk_zoo.from_nnx(variables, **policy)
    else:
        params, state = variables
        pure = ntk_zoo.from_haiku(
            obj, params, state, is_training=False, train_kwargs={"is_training": True}, **policy
        )
    return pure


def param_count(model_config: Mapping[str, Any], input_shape: tuple[int, ...]) -> int:
    """Number of trainable parameters, from shapes only (``jax.eval_shape``: no memory)."""
    framework = model_config.get("framework", "linen")
    key = jax.random.key(0)
    if framework == "nnx":
        from flax import nnx

        cls = _model_class(model_config["family"], framework)
        model = nnx.eval_shape(
            lambda: cls(tuple(input_shape), **_kwargs(model_config), rngs=nnx.Rngs(0))
        )
        params = nnx.state(model, nnx.Param)
    else:
        variables = jax.eval_shape(lambda k: _init(model_config, k, tuple(input_shape))[1], key)
        params = variables["params"] if framework == "linen" else variables[0]
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))
