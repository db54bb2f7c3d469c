"""The function grid: >150 small models ``f(params, x)`` on which structured derivatives must
equal the float64 oracle — every primitive of tests/structured/primitives.py used as a layer,
plus tied, reshaped, transposed, scalar, zero-size and output params, embeddings and control
flow."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from tests.cases import add_bias
from tests.structured.primitives import PRIMS


@dataclasses.dataclass(frozen=True)
class Model:
    name: str
    f: Callable[..., Any]
    params: Any
    x1: Any
    x2: Any
    vmap_axes: Any = 0
    tol: float = 1e-10
    reverse: bool = True  # False: reverse mode cannot differentiate f (compare forward mode)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _normal(seed: int, *shape: int, scale: float = 0.5) -> np.ndarray:
    return scale * _rng(seed).standard_normal(shape)


MODELS: list[Model] = []
X1, X2 = _normal(10, 3, 3, scale=1.0), _normal(11, 2, 3, scale=1.0)


def _primitive_model(k: int, prim) -> Model:
    consts = prim.make_consts(seed=100 + k)
    probe = jax.eval_shape(lambda w: prim.fn(w, *consts), jnp.zeros(prim.w_shape))
    y_size = int(np.prod(probe.shape, dtype=int))

    def f(p, x):
        s = 1.0 + 0.3 * jnp.tanh(x.sum())  # every example sees different constants
        cs = [c * s if jnp.issubdtype(jnp.asarray(c).dtype, jnp.floating) else c for c in consts]
        y = prim.fn(p["w"], *cs)
        return jnp.tanh(y.reshape(-1) + x[0]) @ p["r"]

    params = {"w": _normal(k, *prim.w_shape), "r": _normal(1000 + k, y_size, 2)}
    # Converting the param to float32 inside f rounds it: the kernel is then float32-exact only.
    tol = 1e-6 if prim.primitive == "convert_element_type" else 1e-10
    return Model(f"prim-{prim.name}", jax.vmap(f, in_axes=(None, 0)), params, X1, X2, tol=tol)


for _k, _prim in enumerate(PRIMS):
    MODELS.append(_primitive_model(_k, _prim))


def model(name, params, x1=X1, x2=X2, vmap_axes=0, batch=False, reverse=True):
    """Registers a per-example function (vmapped here), or a batch function if ``batch``."""

    def register(f):
        f_batch = f if batch else jax.vmap(f, in_axes=(None, 0))
        MODELS.append(Model(name, f_batch, params, x1, x2, vmap_axes, reverse=reverse))
        return f

    return register


W34 = {"w": _normal(1, 3, 4), "v": _normal(2, 4, 3)}
SQ = {"w": _normal(3, 3, 3)}


# --- tied, reshaped, transposed params -----------------------------------------------------------
@model("tied-transpose", SQ)
def _(p, x):
    return jnp.tanh(x @ p["w"]) @ p["w"].T


@model("tied-sum-with-transpose", SQ)
def _(p, x):
    return jnp.sin(x @ (p["w"] + p["w"].T))


@model("tied-three-views", SQ)
def _(p, x):
    w = p["w"]
    return jnp.concatenate([x @ w, jnp.tanh(x @ w.T), w.reshape(-1)[:3] * x])


@model("tied-square", SQ)
def _(p, x):
    return x @ (p["w"] @ p["w"])


@model("tied-mul-and-dot", SQ)
def _(p, x):
    return (x * p["w"][0]) @ p["w"]


@model("tied-across-layers", SQ)
def _(p, x):
    h = x
    for _ in range(3):
        h = jnp.tanh(h @ p["w"])
    return h


@model("reshaped-param", {"w": _normal(4, 12)})
def _(p, x):
    return jnp.tanh(x @ p["w"].reshape(3, 4)).sum(-1, keepdims=True) * x


@model("reshaped-and-transposed", {"w": _normal(5, 4, 3)})
def _(p, x):
    return jnp.tanh(x @ p["w"].T.reshape(3, 4))


@model("transposed-param", W34)
def _(p, x):
    return jnp.tanh(p["w"].T @ x) @ p["v"]


@model("reversed-param", SQ)
def _(p, x):
    return x @ p["w"][::-1]


@model("converted-param", W34)
def _(p, x):
    return jnp.tanh(x @ p["w"].astype(jnp.float64)) @ p["v"]


@model("split-param", {"w": _normal(6, 3, 6)})
def _(p, x):
    a, b = jnp.split(p["w"], 2, axis=1)
    return jnp.tanh(x @ a) * (x @ b)


@model("split-activation", W34)
def _(p, x):
    a, b = jnp.split(x @ p["w"], 2)
    return jnp.concatenate([jnp.tanh(a), b**2])


@model("sliced-param", {"w": _normal(7, 5, 3)})
def _(p, x):
    return x @ p["w"][1:4] + p["w"][0]


@model("dynamic-slice-by-input", {"w": _normal(8, 6, 3)})
def _(p, x):
    i = jnp.argmax(x)
    return jnp.tanh(lax.dynamic_slice(p["w"], (i, 0), (2, 3)) @ x)


# --- scalar, zero-size, output params ------------------------------------------------------------
@model("scalar-scale", {"w": _normal(9, 3, 3), "s": np.float64(0.7)})
def _(p, x):
    return p["s"] * jnp.tanh(x @ p["w"])


@model("scalar-bias", {"w": _normal(9, 3, 3), "s": np.float64(0.7)})
def _(p, x):
    return jnp.tanh(x @ p["w"] + p["s"])


@model("scalar-nonlinear", {"s": np.float64(0.3)})
def _(p, x):
    return jnp.exp(p["s"]) * x + p["s"] ** 2


@model("zero-size-param", {"w": _normal(9, 3, 3), "z": np.zeros((0, 3))})
def _(p, x):
    return jnp.tanh(x @ p["w"]) + p["z"].sum(0) + jnp.concatenate([x[:0], p["z"].ravel()]).sum()


@model("param-is-output", {"w": _normal(12, 3, 3), "b": _normal(13, 3)})
def _(p, x):
    return {"out": jnp.tanh(x @ p["w"]), "b": p["b"] + 0.0 * x}


@model("param-returned-directly", {"w": _normal(12, 3, 3), "b": _normal(13, 3)})
def _(p, x):
    return jnp.tanh(x @ p["w"]), p["b"]


@model("unused-param", {"w": _normal(12, 3, 3), "unused": _normal(14, 4)})
def _(p, x):
    return jnp.tanh(x @ p["w"])


@model("nested-pytree", {"a": [_normal(15, 3, 3), (_normal(16, 3),)], "b": {"c": _normal(17, 3)}})
def _(p, x):
    return jnp.tanh(x @ p["a"][0] + p["a"][1][0]) * p["b"]["c"]


# --- embeddings ----------------------------------------------------------------------------------
IDS1 = _rng(20).integers(0, 7, size=(3, 4)).astype(np.int32)
IDS2 = _rng(21).integers(0, 7, size=(2, 4)).astype(np.int32)
EMB = {"emb": _normal(22, 7, 3), "w": _normal(23, 3, 2)}


@model("embedding-mean", EMB, IDS1, IDS2)
def _(p, ids):
    return jnp.tanh(p["emb"][ids].mean(0) @ p["w"])


@model("embedding-per-token", EMB, IDS1, IDS2)
def _(p, ids):
    return jnp.tanh(p["emb"][ids] @ p["w"])


@model("embedding-tied-readout", EMB, IDS1, IDS2)
def _(p, ids):
    h = jnp.tanh(p["emb"][ids].sum(0))
    return h @ p["emb"].T


@model("embedding-take", EMB, IDS1, IDS2)
def _(p, ids):
    return jnp.take(p["emb"], ids, axis=0).reshape(-1) @ jnp.ones((12, 2))


@model("embedding-positional", {"emb": _normal(24, 7, 3), "pos": _normal(25, 4, 3)}, IDS1, IDS2)
def _(p, ids):
    return jnp.tanh(p["emb"][ids] + p["pos"]).sum(-1)


# --- control flow and call primitives ------------------------------------------------------------
STACK = {"w": _normal(30, 3, 3, 3)}


@model("scan-over-layers", STACK)
def _(p, x):
    return lax.scan(lambda h, w: (jnp.tanh(h @ w), None), x, p["w"])[0]


@model("scan-shared-weights", SQ)
def _(p, x):
    return lax.scan(lambda h, _: (jnp.tanh(h @ p["w"]), None), x, None, length=3)[0]


@model("fori-loop-static", SQ)
def _(p, x):
    return lax.fori_loop(0, 3, lambda i, h: jnp.tanh(h @ p["w"]), x)


@model("while-loop-dynamic", SQ, reverse=False)
def _(p, x):
    def body(c):
        return c[0] + 1, jnp.tanh(c[1] @ p["w"])

    # The condition reads the state, so the trip count is known only when the program runs.
    return lax.while_loop(lambda c: (c[0] < 2) & (jnp.abs(c[1]).max() < 1e6), body, (0, x))[1]


@model("cond-on-input", SQ)
def _(p, x):
    return lax.cond(x.sum() > 0, lambda: jnp.tanh(x @ p["w"]), lambda: jnp.sin(x @ p["w"].T))


@model("switch", {"w": _normal(31, 3, 3), "v": _normal(32, 3, 3)})
def _(p, x):
    i = jnp.clip(jnp.argmax(x), 0, 1)
    return lax.switch(i, [lambda: x @ p["w"], lambda: jnp.tanh(x @ p["v"])])


@model("lax-map", SQ)
def _(p, x):
    return lax.map(lambda r: jnp.tanh(r @ p["w"]), x[None])[0]


@model("remat", W34)
def _(p, x):
    return jax.checkpoint(lambda x: jnp.tanh(x @ p["w"]) @ p["v"])(x)


@model("nested-jit", W34)
def _(p, x):
    inner = jax.jit(lambda w, x: jnp.tanh(x @ w))
    return inner(p["w"], x) @ p["v"]


@jax.custom_jvp
def _softplus(x):
    return jnp.log1p(jnp.exp(x))


_softplus.defjvp(
    lambda primals, tangents: (_softplus(primals[0]), jax.nn.sigmoid(primals[0]) * tangents[0])
)


@model("custom-jvp", W34)
def _(p, x):
    return _softplus(x @ p["w"]) @ p["v"]


@jax.custom_vjp
def _scale(x):
    return 2.0 * x


_scale.defvjp(lambda x: (2.0 * x, None), lambda _, g: (2.0 * g,))


@model("custom-vjp", W34)
def _(p, x):
    return jnp.tanh(_scale(x @ p["w"])) @ p["v"]


@model("custom-vjp-on-param", W34)
def _(p, x):
    return jnp.tanh(x @ _scale(p["w"])) @ p["v"]


@model("cumsum-fallback", W34)
def _(p, x):
    return jnp.cumsum(x @ p["w"]) @ p["v"]


@model("cumsum-of-param", {"w": _normal(33, 3, 3)})
def _(p, x):
    return x @ jnp.cumsum(p["w"], axis=0)


@model("sort", W34)
def _(p, x):
    return jnp.sort(x @ p["w"]) @ p["v"]


# --- layers --------------------------------------------------------------------------------------
IMG1, IMG2 = _normal(40, 3, 5, 5, 2, scale=1.0), _normal(41, 2, 5, 5, 2, scale=1.0)
CONV = {"k": _normal(42, 3, 3, 2, 4), "b": _normal(43, 4), "w": _normal(44, 4, 2)}


def _conv(x, k, **kw):
    return lax.conv_general_dilated(
        x[None], k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), **kw
    )[0]


@model("conv-bias-avgpool", CONV, IMG1, IMG2)
def _(p, x):
    h = jax.nn.relu(add_bias(_conv(x, p["k"]), p["b"]))
    return h.mean((0, 1)) @ p["w"]


@model("conv-maxpool", CONV, IMG1, IMG2)
def _(p, x):
    h = jnp.tanh(add_bias(_conv(x, p["k"]), p["b"]))
    h = lax.reduce_window(h, -jnp.inf, lax.max, (2, 2, 1), (2, 2, 1), "VALID")
    return h.mean((0, 1)) @ p["w"]


@model("conv-sumpool", CONV, IMG1, IMG2)
def _(p, x):
    h = jnp.tanh(add_bias(_conv(x, p["k"]), p["b"]))
    h = lax.reduce_window(h, 0.0, lax.add, (2, 2, 1), (1, 1, 1), "VALID")
    return h.mean((0, 1)) @ p["w"]


@model("depthwise-conv", {"k": _normal(45, 3, 3, 1, 2), "w": _normal(46, 2, 2)}, IMG1, IMG2)
def _(p, x):
    return jnp.tanh(_conv(x, p["k"], feature_group_count=2)).mean((0, 1)) @ p["w"]


@model("conv-transpose", {"k": _normal(47, 2, 2, 2, 3), "w": _normal(48, 3, 2)}, IMG1, IMG2)
def _(p, x):
    y = lax.conv_transpose(
        x[None], p["k"], (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return jnp.tanh(y[0]).mean((0, 1)) @ p["w"]


@model("conv-residual", {"k1": _normal(49, 3, 3, 2, 2), "k2": _normal(50, 3, 3, 2, 2)}, IMG1, IMG2)
def _(p, x):
    h = x + _conv(jax.nn.relu(_conv(x, p["k1"])), p["k2"])
    return h.mean((0, 1))


@model("layernorm", {"w": _normal(51, 3, 4), "g": 1 + _normal(52, 4), "b": _normal(53, 4)})
def _(p, x):
    h = x @ p["w"]
    h = (h - h.mean()) / jnp.sqrt(h.var() + 1e-5)
    return jnp.tanh(h * p["g"] + p["b"])


ATT = {
    "q": _normal(54, 3, 4),
    "k": _normal(55, 3, 4),
    "v": _normal(56, 3, 4),
    "o": _normal(57, 4, 2),
}
SEQ1, SEQ2 = _normal(58, 3, 5, 3, scale=1.0), _normal(59, 2, 5, 3, scale=1.0)


@model("attention", ATT, SEQ1, SEQ2)
def _(p, x):
    q, k, v = x @ p["q"], x @ p["k"], x @ p["v"]
    a = jax.nn.softmax(q @ k.T / 2.0, axis=-1)
    return (a @ v).mean(0) @ p["o"]


@model("einsum-heads", {"w": _normal(60, 3, 2, 2), "o": _normal(61, 2, 2, 2)}, SEQ1, SEQ2)
def _(p, x):
    h = jnp.einsum("td,dhk->thk", x, p["w"])
    return jnp.tanh(jnp.einsum("thk,hko->to", h, p["o"])).mean(0)


@model("gelu-mlp", W34)
def _(p, x):
    return jax.nn.gelu(x @ p["w"]) @ p["v"]


@model("select-relu", W34)
def _(p, x):
    h = x @ p["w"]
    return jnp.where(h > 0, h, 0.1 * h) @ p["v"]


@model("multi-axis-output", W34)
def _(p, x):
    return jnp.tanh(jnp.outer(x @ p["w"], x))


@model("batch-axis-last", W34, X1.T, X2.T, vmap_axes=(1, 1, {}), batch=True)
def _(p, x):
    return (jnp.tanh(x.T @ p["w"]) @ p["v"]).T


@model("whole-batch-coupled", W34, vmap_axes=None, batch=True)
def _(p, x):
    h = x @ p["w"]
    h = (h - h.mean(0, keepdims=True)) / (h.std(0, keepdims=True) + 1.0)  # examples interact
    return jnp.tanh(h) @ p["v"]
