"""Every way the frameworks stack layers, exact by every method and ``auto``.

Tiny models (width 3, 3 layers, 2 logits) written the idiomatic way of each framework: Flax
linen ``nn.scan`` with ``variable_axes={"params": 0}`` (with and without ``nn.remat`` inside),
Flax NNX ``nnx.scan`` over layers created with ``nnx.vmap``, Haiku ``hk.layer_stack`` (with and
without ``hk.remat``), a plain ``lax.scan`` over stacked weights, an Equinox filtered scan over a
stacked module, and an RNN whose weights every step shares. Each is checked against the float64
oracle of the same model with its stacked leaves split into one leaf per layer, so the per-leaf
kernel of a stacked leaf (``sum_params=False``) is checked to be the sum of its layers'.

``test_no_fallback_warning`` asks that structured derivatives see through the framework's scan
(no "no structure rule for the primitive `scan`" fallback warning).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntk_zoo
from ntk_zoo.structured import _warnings
from tests.cases import add_bias
from tests.oracle import oracle_ntk, rel_error

EXACT = 1e-10
WIDTH, LAYERS, LOGITS = 3, 3, 2
METHODS = ["jacobian_contraction", "ntk_vector_products", "structured_derivatives", "auto"]
STACK = "stack"  # every pattern names its stacked part so (its leaves have a leading layer axis)


def _normal(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


X1, X2 = _normal(10, 3, WIDTH), _normal(11, 2, WIDTH)


@dataclasses.dataclass(frozen=True)
class Pattern:
    name: str
    f: Callable[..., Any]  # f(params, x)
    params: Any  # float64; the leaves under a STACK key have a leading layer axis
    x1: Any = None  # None: X1, X2
    x2: Any = None


def _f64(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)


# --- the patterns -------------------------------------------------------------------------------


def linen_scan(remat: bool) -> Pattern:
    import flax.linen as nn

    class Block(nn.Module):
        @nn.compact
        def __call__(self, h, _):
            return h + jnp.tanh(nn.Dense(WIDTH, param_dtype=jnp.float64)(h)), None

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            block = nn.remat(Block) if remat else Block
            stack = nn.scan(
                block,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                length=LAYERS,
            )
            h, _ = stack(name=STACK)(x, None)
            return nn.Dense(LOGITS, param_dtype=jnp.float64)(h)

    model = Model()
    pure = ntk_zoo.from_linen(model, model.init(jax.random.key(0), jnp.asarray(X1)))
    return Pattern("linen_scan_remat" if remat else "linen_scan", pure.apply, pure.params)


def nnx_scan() -> Pattern:
    from flax import nnx

    class Block(nnx.Module):
        def __init__(self, rngs):
            self.dense = nnx.Linear(WIDTH, WIDTH, param_dtype=jnp.float64, rngs=rngs)

        def __call__(self, h):
            return h + jnp.tanh(self.dense(h))

    class Model(nnx.Module):
        def __init__(self, rngs):
            @nnx.split_rngs(splits=LAYERS)
            @nnx.vmap(in_axes=(0,), out_axes=0)
            def create(rngs):
                return Block(rngs)

            self.stack = create(rngs)
            self.head = nnx.Linear(WIDTH, LOGITS, param_dtype=jnp.float64, rngs=rngs)

        def __call__(self, x):
            @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
            def layer(h, block):
                return block(h)

            return self.head(layer(x, self.stack))

    pure = ntk_zoo.from_nnx(Model(nnx.Rngs(0)))
    return Pattern("nnx_scan", pure.apply, pure.params)


def haiku_layer_stack(remat: bool) -> Pattern:
    import haiku as hk

    def forward(x):
        def block(h):
            return h + jnp.tanh(hk.Linear(WIDTH)(h))

        block = hk.remat(block) if remat else block
        h = hk.layer_stack(LAYERS, name=STACK)(block)(x)
        return hk.Linear(LOGITS)(h)

    transformed = hk.without_apply_rng(hk.transform(forward))
    pure = ntk_zoo.from_haiku(transformed, transformed.init(jax.random.key(0), jnp.asarray(X1)))
    return Pattern("haiku_layer_stack" + "_remat" * remat, pure.apply, pure.params)


def lax_scan() -> Pattern:
    def f(params, x):
        def layer(h, w):
            return h + jnp.tanh(add_bias(h @ w["w"], w["b"])), None

        h, _ = jax.lax.scan(layer, x, params[STACK])
        return h @ params["head"]

    params = {
        STACK: {"w": _normal(0, LAYERS, WIDTH, WIDTH), "b": _normal(1, LAYERS, WIDTH)},
        "head": _normal(2, WIDTH, LOGITS),
    }
    return Pattern("lax_scan", f, _f64(params))


def equinox_scan() -> Pattern:
    import equinox as eqx

    make = lambda key: eqx.nn.Linear(WIDTH, WIDTH, dtype=jnp.float64, key=key)
    stack = eqx.filter_vmap(make)(jax.random.split(jax.random.key(0), LAYERS))
    head = eqx.nn.Linear(WIDTH, LOGITS, dtype=jnp.float64, key=jax.random.key(1))
    arrays, static = eqx.partition({STACK: stack, "head": head}, eqx.is_array)

    def f(params, x):
        model = eqx.combine(params, static)
        layers, layer_static = eqx.partition(model[STACK], eqx.is_array)

        def layer(h, arrays):
            linear = eqx.combine(arrays, layer_static)
            return h + jnp.tanh(jax.vmap(linear)(h)), None

        h, _ = jax.lax.scan(layer, x, layers)
        return jax.vmap(model["head"])(h)

    return Pattern("equinox_scan", f, arrays)


def rnn() -> Pattern:
    """One weight for every step (broadcast into the scan body), over a sequence of 3 steps."""

    def f(params, x):  # x: (n, steps, 2)
        def step(h, x_t):
            return jnp.tanh(add_bias(x_t @ params["wx"] + h @ params["wh"], params["b"])), None

        h0 = jnp.zeros((x.shape[0], WIDTH), x.dtype)
        h, _ = jax.lax.scan(step, h0, jnp.swapaxes(x, 0, 1))
        return h @ params["head"]

    params = {
        "wx": _normal(0, 2, WIDTH),
        "wh": _normal(1, WIDTH, WIDTH),
        "b": _normal(2, WIDTH),
        "head": _normal(3, WIDTH, LOGITS),
    }
    return Pattern("rnn", f, _f64(params), _normal(10, 3, 3, 2), _normal(11, 2, 3, 2))


PATTERNS = {
    "linen_scan": functools.partial(linen_scan, False),
    "linen_scan_remat": functools.partial(linen_scan, True),
    "nnx_scan": nnx_scan,
    "haiku_layer_stack": functools.partial(haiku_layer_stack, False),
    "haiku_layer_stack_remat": functools.partial(haiku_layer_stack, True),
    "lax_scan": lax_scan,
    "equinox_scan": equinox_scan,
    "rnn": rnn,
}


@functools.cache
def pattern(name: str) -> Pattern:
    p = PATTERNS[name]()
    x1, x2 = (X1, X2) if p.x1 is None else (p.x1, p.x2)
    return dataclasses.replace(p, x1=jnp.asarray(x1, jnp.float64), x2=jnp.asarray(x2, jnp.float64))


# --- the oracle, one leaf per layer -------------------------------------------------------------


def _is_stacked(path) -> bool:
    return any(getattr(k, "key", getattr(k, "name", None)) == STACK for k in path) or any(
        STACK in str(getattr(k, "key", "")).split("/") for k in path
    )


@functools.cache
def per_layer(name: str) -> tuple[Callable[..., Any], Any, list[bool]]:
    """``(f, params)`` with every stacked leaf split into a tuple of its layers."""
    p = pattern(name)
    paths, treedef = jax.tree_util.tree_flatten_with_path(p.params)
    stacked = [_is_stacked(path) for path, _ in paths]
    split = [tuple(leaf) if s else leaf for (_, leaf), s in zip(paths, stacked)]

    def f(split_params, x):
        leaves = [jnp.stack(leaf) if s else leaf for leaf, s in zip(split_params, stacked)]
        return p.f(jax.tree.unflatten(treedef, leaves), x)

    return f, split, stacked


def oracle(name: str, x2, trace_axes, sum_params):
    f, split, stacked = per_layer(name)
    p = pattern(name)
    want = oracle_ntk(f, p.x1, x2, split, trace_axes=trace_axes, sum_params=sum_params)
    if sum_params:
        return want
    # The stacked leaf's kernel: the sum of its layers'.
    return jax.tree.unflatten(
        jax.tree.structure(p.params), [sum(k) if s else k for k, s in zip(want, stacked)]
    )


def test_every_pattern_has_a_stacked_leaf_but_the_rnn():
    for name in PATTERNS:
        stacked = per_layer(name)[2]
        assert any(stacked) == (name != "rnn"), name
        # Each stacked leaf has one slice per layer.
        leaves = jax.tree.leaves(pattern(name).params)
        assert all(leaf.shape[0] == LAYERS for leaf, s in zip(leaves, stacked) if s), name


# --- exactness ----------------------------------------------------------------------------------

# (x2 given?, trace_axes, sum_params, vmap_axes): pattern i and method j take variant (i + j) % 4,
# so every pattern meets each variant once and every method meets each variant twice.
VARIANTS = [
    (False, (-1,), True, 0),
    (True, (), False, None),
    (True, (-1,), False, 0),
    (False, (), True, None),
]
GRID = [
    (name, method, VARIANTS[(i + j) % len(VARIANTS)])
    for i, name in enumerate(PATTERNS)
    for j, method in enumerate(METHODS)
]


def _grid_id(name, method, variant):
    given, trace, sum_params, vmap = variant
    return "-".join(
        (
            name,
            method,
            "x2" if given else "x2=None",
            "traced" if trace else "full",
            "summed" if sum_params else "per-leaf",
            "vmap" if vmap is not None else "novmap",
        )
    )


@pytest.mark.parametrize("name,method,variant", GRID, ids=[_grid_id(*g) for g in GRID])
def test_matches_per_layer_oracle(name, method, variant):
    given, trace_axes, sum_params, vmap_axes = variant
    p = pattern(name)
    x2 = p.x2 if given else None
    kernel_fn = ntk_zoo.ntk_fn(
        p.f, method=method, trace_axes=trace_axes, sum_params=sum_params, vmap_axes=vmap_axes
    )
    with warnings.catch_warnings():
        # Today's engine falls back (exactly) on scan: test_no_fallback_warning asks for more.
        warnings.filterwarnings("ignore", message=".*no structure rule for the primitive")
        got = kernel_fn(p.x1, x2, p.params)
    want = oracle(name, x2, trace_axes, sum_params)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert rel_error(got, want) <= EXACT


@pytest.mark.parametrize("name", PATTERNS)
def test_no_fallback_warning(name, monkeypatch):
    monkeypatch.setattr(_warnings, "_WARNED", set())  # warn_once: as in a fresh process
    p = pattern(name)
    kernel_fn = ntk_zoo.ntk_fn(p.f, method="structured_derivatives", vmap_axes=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kernel = kernel_fn(p.x1, p.x2, p.params)
    assert kernel.shape == (p.x1.shape[0], p.x2.shape[0])
