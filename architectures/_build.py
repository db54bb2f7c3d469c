"""``build(model_config)``: one entry point from a config to a ``PureFn`` in any framework.

Each framework is one entry of ``_FRAMEWORKS`` (a :class:`Framework`): how to turn a model
class into a pure ``(key, example input) -> variables`` initialiser, and how to wrap the
initialised variables as a ``PureFn`` with the ``ntk_zoo`` adapter. Adding a framework is
adding one entry (and its ``architectures/<framework>/`` modules); nothing else branches on the
framework's name.

Initialisation skips the forward pass that linen and Haiku run to create variables, and batches
the random draws (``init="batched"``, the default; ``architectures/_batched_init.py``): ``init``
is traced with the example input abstract, key derivations, zeros and ones run op by op, and
every ``jax.random.normal`` draw of every shape is computed by one compiled program in chunks
of flat indices (with ``jax_threefry_partitionable``, JAX's default, element ``i`` of a draw
depends only on the key and ``i``), where drawing op by op compiles the generator once per
distinct parameter shape (about 0.75 CPU-s each). Values are bit for bit those of the
frameworks' own initialisation with the same key (``init="eager"`` runs them as the frameworks
do, forward pass included). ``init="lazy"`` is Flax's ``lazy_init`` (a partial evaluation: the
draws op by op; also the fallback of ``"batched"`` for what it does not recognise).
``build(..., init="jit")`` compiles the whole initialisation as one program instead: the same
values up to float rounding (XLA fuses each draw with its scale), but on CPU it compiles the
random generator once per call site (WRN-28-10: 29 call sites, 11 shapes).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import ntk_zoo
from architectures._batched_init import Unsupported, batched_init

FAMILIES = {"mlp": "MLP", "wide_resnet": "WideResNet", "vit": "ViT"}
# Config keys each family's constructor takes (everything else in the config is ignored).
FAMILY_KEYS = {
    "mlp": ("depth", "width", "num_classes", "activation", "parameterization", "bias"),
    "wide_resnet": ("depth", "width", "num_classes", "norm", "parameterization", "scan"),
    "vit": (
        "variant",
        "num_classes",
        "pool",
        "intermediates",
        "depth",
        "width",
        "heads",
        "mlp_dim",
        "scan",
    ),
}

Variables = Any
Initialiser = Callable[[jax.Array, jax.Array], Variables]


class Framework(NamedTuple):
    """How the zoo handles one framework.

    Attributes:
      initialiser: ``(model class, constructor kwargs, example input shape)`` ->
        ``(handle, init)``, where ``init(key, x)`` is a pure function of a PRNG key and an
        example batch ``x`` of one, returning the model's variables as a pytree (so that it can
        be jitted, shape-evaluated or partially evaluated with ``x`` abstract; the variables
        must not depend on the values in ``x``), and ``handle`` is what ``to_pure`` needs
        beside them (a linen module, a Haiku transform, a holder that ``init`` fills with the
        NNX graph definition: ``to_pure`` runs after ``init``).
      params: the trainable part of the variables (for counting parameters).
      to_pure: ``(handle, variables, policy)`` -> ``ntk_zoo.PureFn``; ``policy`` holds the
        adapters' ``batch_norm``, ``calibration`` and ``output``.
    """

    initialiser: Callable[[type, dict[str, Any], tuple[int, ...]], tuple[Any, Initialiser]]
    params: Callable[[Variables], Any]
    to_pure: Callable[[Any, Variables, dict[str, Any]], ntk_zoo.PureFn]


# --- Flax linen -----------------------------------------------------------------------------


def _linen_initialiser(cls, kwargs, input_shape):
    module = cls(**kwargs)
    return module, lambda key, x: module.init(key, x, train=False)


def _linen_pure(module, variables, policy):
    return ntk_zoo.from_linen(
        module, variables, train=False, train_kwargs={"train": True}, **policy
    )


# --- Flax NNX -------------------------------------------------------------------------------


def _nnx_initialiser(cls, kwargs, input_shape):
    from flax import nnx

    # The graph definition (static: no arrays) is kept from the initialisation itself, traced
    # or not, rather than from one more construction of the model under nnx.eval_shape.
    graphdef: dict[str, Any] = {}

    def init(key, x):  # NNX needs no example input
        graphdef["value"], state = nnx.split(cls(tuple(input_shape), **kwargs, rngs=nnx.Rngs(key)))
        return state

    return graphdef, init


def _nnx_params(state):
    from flax import nnx

    return nnx.split_state(state, nnx.Param, ...)[0]


def _nnx_pure(graphdef, state, policy):
    from flax import nnx

    return ntk_zoo.from_nnx(nnx.merge(graphdef["value"], state), **policy)


# --- Haiku ----------------------------------------------------------------------------------


def _haiku_initialiser(cls, kwargs, input_shape):
    import haiku as hk

    transformed = hk.without_apply_rng(
        hk.transform_with_state(lambda x, is_training=False: cls(**kwargs)(x, is_training))
    )

    def init(key, x):
        # Haiku creates BatchNorm's moving averages only in training mode; start them, as Flax
        # does, at mean 0 and variance 1 (from their shapes only: not from x).
        params, state = transformed.init(key, x, is_training=True)
        state = {
            name: {
                k: jnp.ones_like(v)
                if name.endswith("var_ema") and k != "counter"
                else jnp.zeros_like(v)
                for k, v in entries.items()
            }
            for name, entries in state.items()
        }
        return params, state

    return transformed, init


def _haiku_pure(transformed, variables, policy):
    params, state = variables
    return ntk_zoo.from_haiku(
        transformed, params, state, is_training=False, train_kwargs={"is_training": True}, **policy
    )


# The one table of frameworks: name -> how to initialise and wrap its models.
_FRAMEWORKS: dict[str, Framework] = {
    "linen": Framework(_linen_initialiser, lambda v: v["params"], _linen_pure),
    "nnx": Framework(_nnx_initialiser, _nnx_params, _nnx_pure),
    "haiku": Framework(_haiku_initialiser, lambda v: v[0], _haiku_pure),
}
FRAMEWORKS = tuple(_FRAMEWORKS)
INIT_MODES = ("batched", "lazy", "eager", "jit")


def _lookup(config: Mapping[str, Any]) -> tuple[Framework, type, dict[str, Any]]:
    family, framework = config.get("family"), config.get("framework", "linen")
    if family not in FAMILIES:
        raise ValueError(f"Unknown model family {family!r}; valid families: {sorted(FAMILIES)}.")
    if framework not in _FRAMEWORKS:
        raise ValueError(f"Unknown framework {framework!r}; valid frameworks: {FRAMEWORKS}.")
    cls = getattr(importlib.import_module(f"architectures.{framework}.{family}"), FAMILIES[family])
    kwargs = {k: config[k] for k in FAMILY_KEYS[family] if k in config}
    return _FRAMEWORKS[framework], cls, kwargs


def build(
    model_config: Mapping[str, Any],
    *,
    key: jax.Array,
    input_shape: tuple[int, ...],
    calibration: jax.Array | None = None,
    dtype: Any = None,
    init: str = "batched",
) -> ntk_zoo.PureFn:
    """Builds and initialises a zoo model as a :class:`ntk_zoo.PureFn`.

    Args:
      model_config: ``family`` (``mlp | wide_resnet | vit``), ``framework``
        (``linen | nnx | haiku``, default linen), the family's settings (see ``FAMILY_KEYS``;
        a ViT takes a named ``variant`` such as ``"B/16"`` and optionally ``depth``, ``width``,
        ``heads``, ``mlp_dim`` overriding its size), and optionally ``batch_norm`` (the
        BatchNorm policy: ``running | batch | coupled``).
      key: PRNG key for the initialisation.
      input_shape: the shape of one example, e.g. ``(8, 8, 1)``.
      calibration: the batch whose statistics ``batch_norm="batch"`` freezes.
      dtype: cast every float variable to this dtype (e.g. float64 for exact checks).
      init: how to initialise (see the module's docstring): ``"batched"`` (default: only what
        produces variables runs, the random draws batched into one compiled program),
        ``"lazy"`` (only what produces variables runs, op by op; the same values),
        ``"eager"`` (the framework's own initialisation, forward pass included; the same
        values) or ``"jit"`` (one compiled program; the same values up to float rounding).

    Example:
      >>> import jax, architectures
      >>> config = {"family": "mlp", "framework": "haiku", "depth": 1, "width": 8}
      >>> pure = architectures.build(config, key=jax.random.key(0), input_shape=(4,))
      >>> pure.apply(pure.params, jax.numpy.ones((2, 4))).shape
      (2, 10)
    """
    if init not in INIT_MODES:
        raise ValueError(f"Unknown init {init!r}; use one of {INIT_MODES}.")
    framework, cls, kwargs = _lookup(model_config)
    handle, initialise = framework.initialiser(cls, kwargs, tuple(input_shape))
    if dtype is not None:  # every float variable, BatchNorm statistics included
        cast = lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a
        initialise = lambda key, x, f=initialise: jax.tree.map(cast, f(key, x))
    example = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    variables = None
    if init == "batched":
        try:
            variables = batched_init(initialise, key, example)
        except Unsupported:
            init = "lazy"  # the same values, the draws op by op
    if init == "lazy":
        from flax.core.partial_eval import lazy_init

        variables = lazy_init(initialise)(key, example)
    elif variables is None:
        x = jnp.zeros(example.shape, example.dtype)
        variables = (jax.jit(initialise) if init == "jit" else initialise)(key, x)
    policy = dict(
        batch_norm=model_config.get("batch_norm", "running"),
        calibration=calibration,
        output=0 if model_config.get("intermediates", False) else None,
    )
    return framework.to_pure(handle, variables, policy)


def param_count(model_config: Mapping[str, Any], input_shape: tuple[int, ...]) -> int:
    """Number of trainable parameters, from shapes only (``jax.eval_shape``: no memory).

    Example:
      >>> import architectures
      >>> architectures.param_count({"family": "mlp", "depth": 1, "width": 8}, (4,))
      130
    """
    framework, cls, kwargs = _lookup(model_config)
    _, init = framework.initialiser(cls, kwargs, tuple(input_shape))
    example = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    variables = jax.eval_shape(init, jax.random.key(0), example)
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(framework.params(variables)))
