"""The one list of tiny models that every cross-cutting test iterates over.

Each case is a plain-JAX ``f(params, x, **kwargs)`` with float64 params and two input batches,
plus the ``vmap_axes`` that is valid for it. The adapters' and the zoo's models have their own
tests (``tests/adapters``, ``tests/architectures``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    f: Callable[..., Any]
    params: Any
    x1: Any
    x2: Any
    vmap_axes: Any = 0
    trace_axes: Any = (-1,)  # the default, except where the last axis is the batch axis
    kwargs1: dict = dataclasses.field(default_factory=dict)
    kwargs2: dict = dataclasses.field(default_factory=dict)

    def kwargs(self, same: bool) -> dict:
        """Keyword arguments for ``kernel_fn`` (2-tuples when x2 differs from x1)."""
        if same:
            return dict(self.kwargs1)
        return {k: (self.kwargs1[k], self.kwargs2[k]) for k in self.kwargs1}

    def cast(self, dtype) -> Case:
        cast = lambda t: jax.tree.map(lambda a: jnp.asarray(a, dtype), t)
        return dataclasses.replace(
            self,
            params=cast(self.params),
            x1=cast(self.x1),
            x2=cast(self.x2),
            kwargs1=cast(self.kwargs1),
            kwargs2=cast(self.kwargs2),
        )


def _normal(seed: int, *shape: int, scale: float = 1.0) -> np.ndarray:
    return scale * np.random.default_rng(seed).standard_normal(shape)


# --- models -------------------------------------------------------------------------------------


def add_bias(y, b):
    """``y + b`` over trailing axes, broadcast explicitly (the suite raises on rank promotion)."""
    return y + jnp.expand_dims(b, tuple(range(y.ndim - b.ndim)))  # the implicit form's jaxpr


def mlp(params, x):
    h = jax.nn.relu(add_bias(x @ params["w0"], params["b0"]))
    h = jnp.tanh(add_bias(h @ params["w1"], params["b1"]))
    return add_bias(h @ params["w2"], params["b2"])


def _conv(x, w, stride=1):
    return lax.conv_general_dilated(
        x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def convnet(params, x):
    h = jax.nn.relu(add_bias(_conv(x, params["conv1"]), params["bias1"]))
    h = jnp.tanh(_conv(h, params["conv2"], stride=2))
    return h.mean(axis=(1, 2)) @ params["dense"]


def conv4d(params, x):
    """A conv net with 4-D outputs (n, h, w, c), for sweeps over trace/diagonal axes."""
    h = jnp.tanh(_conv(x, params["conv1"]))
    return add_bias(_conv(h, params["conv2"]), params["bias"])


def attention(params, x):
    q, k, v = (x @ params[n] for n in ("wq", "wk", "wv"))
    scores = jnp.einsum("...td,...sd->...ts", q, k) / np.sqrt(q.shape[-1])
    h = x + jax.nn.softmax(scores, axis=-1) @ v @ params["wo"]
    h = (h - h.mean(-1, keepdims=True)) / jnp.sqrt(h.var(-1, keepdims=True) + 1e-5)
    return h.mean(axis=-2) @ params["head"]


def tied(params, x):
    """The same weight matrix used twice (encoder and transposed decoder)."""
    h = jnp.tanh(x @ params["w"])
    return jnp.sin(h @ params["w"].T) @ params["out"]


def nested(params, x):
    """Nested-dict params with a scalar leaf, a bias-only sub-module and a zero-size leaf."""
    layer = params["layer"]
    empty = x[:, :0] @ params["empty"]
    return add_bias(layer["scale"] * jnp.tanh(x @ layer["w"]), params["bias_only"]["b"]) + empty


def scalar_out(params, x):
    """One output per example: per-example outputs are scalars."""
    return jnp.tanh(x @ params["w"]) @ params["v"]


def pytree_out(params, x):
    h = jnp.tanh(x @ params["w"])
    return {"logits": h @ params["head"], "aux": [(h[:, :, None] * h[:, None, :2])]}


def batch_last(params, x):
    """Inputs (d, n) and outputs (o, n): the batch axis is not leading."""
    return params["w2"] @ jnp.tanh(params["w1"] @ x)


def with_kwarg(params, x, mask, temperature):
    h = jnp.tanh((x * mask) @ params["w"] / temperature)
    return h @ params["head"]


def pytree_in(params, x):
    """Inputs {'a': (n, 3), 'b': (2, n)}: a pytree with different batch axes per leaf."""
    h = jnp.tanh(x["a"] @ params["wa"] + x["b"].T @ params["wb"])
    return h @ params["head"]


# --- the list -----------------------------------------------------------------------------------

CASES: list[Case] = [
    Case(
        "mlp",
        mlp,
        {
            "w0": _normal(0, 4, 6),
            "b0": _normal(1, 6, scale=0.1),
            "w1": _normal(2, 6, 5),
            "b1": _normal(3, 5, scale=0.1),
            "w2": _normal(4, 5, 3),
            "b2": _normal(5, 3, scale=0.1),
        },
        _normal(10, 3, 4),
        _normal(11, 2, 4),
    ),
    Case(
        "convnet",
        convnet,
        {
            "conv1": _normal(0, 3, 3, 2, 3, scale=0.5),
            "bias1": _normal(1, 3, scale=0.1),
            "conv2": _normal(2, 3, 3, 3, 4, scale=0.5),
            "dense": _normal(3, 4, 2),
        },
        _normal(10, 2, 5, 5, 2),
        _normal(11, 3, 5, 5, 2),
    ),
    Case(
        "conv4d",
        conv4d,
        {
            "conv1": _normal(0, 3, 3, 2, 3, scale=0.5),
            "conv2": _normal(1, 3, 3, 3, 2, scale=0.5),
            "bias": _normal(2, 2, scale=0.1),
        },
        _normal(10, 2, 3, 4, 2),
        _normal(11, 2, 3, 4, 2),
    ),
    Case(
        "attention",
        attention,
        {
            "wq": _normal(0, 4, 4, scale=0.5),
            "wk": _normal(1, 4, 4, scale=0.5),
            "wv": _normal(2, 4, 4, scale=0.5),
            "wo": _normal(3, 4, 4, scale=0.5),
            "head": _normal(4, 4, 2),
        },
        _normal(10, 2, 3, 4),
        _normal(11, 3, 3, 4),
    ),
    Case(
        "tied",
        tied,
        {"w": _normal(0, 4, 5, scale=0.5), "out": _normal(1, 4, 3)},
        _normal(10, 3, 4),
        _normal(11, 2, 4),
    ),
    Case(
        "nested",
        nested,
        {
            "layer": {"w": _normal(0, 3, 4), "scale": np.asarray(1.5)},
            "bias_only": {"b": _normal(1, 4)},
            "empty": np.zeros((0, 4)),
        },
        _normal(10, 3, 3),
        _normal(11, 2, 3),
    ),
    Case(
        "scalar_out",
        scalar_out,
        {"w": _normal(0, 3, 5), "v": _normal(1, 5)},
        _normal(10, 3, 3),
        _normal(11, 2, 3),
        trace_axes=(),
    ),
    Case(
        "pytree_out",
        pytree_out,
        {"w": _normal(0, 3, 4), "head": _normal(1, 4, 2)},
        _normal(10, 3, 3),
        _normal(11, 2, 3),
    ),
    Case(
        "batch_last",
        batch_last,
        {"w1": _normal(0, 5, 3), "w2": _normal(1, 2, 5)},
        _normal(10, 3, 4),
        _normal(11, 3, 2),
        vmap_axes=(1, -1, {}),
        trace_axes=(0,),
    ),
    Case(
        "kwarg",
        with_kwarg,
        {"w": _normal(0, 3, 4), "head": _normal(1, 4, 2)},
        _normal(10, 3, 3),
        _normal(11, 2, 3),
        vmap_axes=(0, 0, {"mask": 0}),
        kwargs1={"mask": _normal(20, 3, 3), "temperature": np.asarray(2.0)},
        kwargs2={"mask": _normal(21, 2, 3), "temperature": np.asarray(2.0)},
    ),
    Case(
        "pytree_in",
        pytree_in,
        {"wa": _normal(0, 3, 4), "wb": _normal(1, 2, 4), "head": _normal(2, 4, 3)},
        {"a": _normal(10, 3, 3), "b": _normal(11, 2, 3)},
        {"a": _normal(12, 2, 3), "b": _normal(13, 2, 2)},
        vmap_axes=({"a": 0, "b": 1}, 0, {}),
    ),
]

CASES = [c.cast(jnp.float64) for c in CASES]
CASE_IDS = [c.name for c in CASES]


# --- the zoo's tiny variants --------------------------------------------------------------------

ZOO_MODELS = {
    "mlp": {"family": "mlp", "depth": 2, "width": 6, "num_classes": 3},
    "wrn": {"family": "wide_resnet", "depth": 10, "width": 1, "norm": "batch", "num_classes": 3},
    "vit": {"family": "vit", "variant": "test/2", "num_classes": 3},
}
ZOO_IDS = [f"{m}-{fw}" for m in ZOO_MODELS for fw in ("linen", "nnx", "haiku")]


@functools.cache
def zoo_case(case_id: str) -> Case:
    """A zoo model (float64 params) on 4x4x1 images, as a Case over its PureFn."""
    import architectures

    model, framework = case_id.split("-")
    config = {**ZOO_MODELS[model], "framework": framework}
    pure = architectures.build(
        config, key=jax.random.key(0), input_shape=(4, 4, 1), dtype=jnp.float64
    )
    return Case(case_id, pure.apply, pure.params, _normal(10, 2, 4, 4, 1), _normal(11, 3, 4, 4, 1))
