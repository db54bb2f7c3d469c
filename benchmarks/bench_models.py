"""Benchmark models as plain ``f(params, x)`` functions, identical under jax 0.4.23 and 0.10.2.

Written in plain ``jax.numpy`` / ``jax.lax`` (no flax, no haiku, no ``jax.nn`` helpers whose
definitions changed between versions), so that ``benchmarks/vs_neural_tangents.py`` can run the
very same functions under neural-tangents' jax 0.4.23 and under ours. Parameters and inputs are
float32 numpy arrays drawn in a fixed order from ``numpy.random.default_rng(seed)`` as float64
standard normals (the same stream in numpy 1.26 and 2.x) and then cast, so both sides see the same
numbers; :func:`checksum` lets a caller confirm it.

Models (the names used on the command line):

* ``mlp``: 3072-2048-2048-2048-O, ReLU, NTK parameterisation (``x @ W / sqrt(fan_in) + b``),
  N=16 — the fully-connected network of the neural-tangents paper's benchmarks.
* ``conv``: a small pre-activation WideResNet: 3×3 conv stem (16 ch), a residual block at 16 ch,
  a stride-2 residual block to 32 ch with a 1×1 projection shortcut, ReLU, global average pool,
  dense head; 16×16×3 images, N=16.
* ``convnet``: two ReLU 3×3 convolutions (C channels, the second of stride 2), global average
  pool, dense head; 16×16×3 images, N examples (the second model of the methods suite).
* ``vit``: a small ViT: 4×4 patches of 16×16×3 images embedded by reshape + dense (dim 64),
  learned position embedding, 2 pre-LayerNorm blocks (4-head self-attention, MLP 64-128-64 with
  tanh-approximate GELU), final LayerNorm, mean pooling over tokens, dense head; N=16.
* ``resnet18``: a ResNet-18 of the ImageNet layout (7×7 stride-2 stem of 64 channels, 3×3
  stride-2 max pool, four stages of two basic blocks at 64/128/256/512 channels, stride 2 and a
  1×1 projection at the start of stages 2–4, global average pool, dense head): 11.69M params
  with 1000 logits. Plain jax.numpy, NTK parameterisation, no BatchNorm (at inference it is a
  per-channel affine map; leaving it out changes no shape and no FLOP order). Images of
  ``widths=(size,)`` (default 32×32×3, CIFAR-sized, so that a 1000-logit kernel is feasible on
  a CPU: the stem and pool bring it to 8×8 before the first stage).

Zoo models (built by ``architectures.build`` exactly as the ``ntk-zoo`` command line builds them:
Flax linen, standard parameterisation, BatchNorm with running statistics, ``jax.random.key(seed)``;
so they run under our environment only, not under neural-tangents' venv). The name gives the
size, ``widths=(size,)`` the image side (default 32):

* ``wrn-D-K``: the zoo's WideResNet WRN-D-K (e.g. ``wrn-16-4``, ``wrn-28-10``);
* ``vit-S/P``: the zoo's ViT of named size S and patch P (e.g. ``vit-S/16``, ``vit-B/16``),
  class-token pooling.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax

MODELS = ("mlp", "conv", "vit", "convnet", "resnet18", "wrn-D-K", "vit-S/P")


class Model(NamedTuple):
    name: str
    f: object  # f(params, x) -> (N, O)
    params: dict  # nested dicts of float32 numpy arrays
    x: np.ndarray  # float32 inputs, batch axis 0
    description: str


def _normal(rng: np.random.Generator, shape, scale: float = 1.0) -> np.ndarray:
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def n_params(params) -> int:
    if isinstance(params, dict):
        return sum(n_params(v) for v in params.values())
    if isinstance(params, (list, tuple)):
        return sum(n_params(v) for v in params)
    return int(np.prod(np.shape(params)))


def checksum(params, x) -> float:
    """Sum of |values| of all params and inputs in float64 (same on both sides or bust)."""
    if isinstance(params, dict):
        total = sum(checksum(params[k], None) for k in sorted(params))
    elif isinstance(params, (list, tuple)):
        total = sum(checksum(v, None) for v in params)
    else:
        total = float(np.abs(np.asarray(params, np.float64)).sum())
    if x is not None:
        total += float(np.abs(np.asarray(x, np.float64)).sum())
    return total


# ---------------------------------------------------------------------------------------------
# MLP


def mlp_params(widths, seed: int = 0, bias_std: float = 0.1) -> dict:
    rng = np.random.default_rng(seed)
    params = {}
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        params[f"l{i}"] = {"w": _normal(rng, (a, b)), "b": _normal(rng, (b,), bias_std)}
    return params


def mlp_apply(params, x):
    h = x
    n_layers = len(params)
    for i in range(n_layers):
        p = params[f"l{i}"]
        h = jnp.dot(h, p["w"]) / math.sqrt(p["w"].shape[0]) + p["b"]
        if i < n_layers - 1:
            h = jnp.maximum(h, 0.0)
    return h


def mlp(o: int = 8, n: int = 16, seed: int = 0, widths=(3072, 2048, 2048, 2048)) -> Model:
    widths = (*widths, o)
    params = mlp_params(widths, seed)
    x = _normal(np.random.default_rng(seed + 1), (n, widths[0]))
    desc = f"MLP {'-'.join(map(str, widths))}, N={n}"
    return Model("mlp", mlp_apply, params, x, desc)


# ---------------------------------------------------------------------------------------------
# Small pre-activation WideResNet

_DN = ("NHWC", "HWIO", "NHWC")


def _conv(x, w, stride: int = 1):
    fan_in = w.shape[0] * w.shape[1] * w.shape[2]
    y = lax.conv_general_dilated(x, w, (stride, stride), "SAME", dimension_numbers=_DN)
    return y / math.sqrt(fan_in)


def conv_apply(params, x):
    h = _conv(x, params["stem"])
    # block 1: identity shortcut
    b = params["block1"]
    r = _conv(jnp.maximum(h, 0.0), b["conv1"])
    r = _conv(jnp.maximum(r, 0.0), b["conv2"])
    h = h + r
    # block 2: stride 2, wider, 1x1 projection shortcut on the pre-activation
    b = params["block2"]
    a = jnp.maximum(h, 0.0)
    r = _conv(a, b["conv1"], stride=2)
    r = _conv(jnp.maximum(r, 0.0), b["conv2"])
    h = _conv(a, b["shortcut"], stride=2) + r
    h = jnp.mean(jnp.maximum(h, 0.0), axis=(1, 2))
    head = params["head"]
    return jnp.dot(h, head["w"]) / math.sqrt(head["w"].shape[0]) + head["b"]


def conv(o: int = 8, n: int = 16, seed: int = 0, size: int = 16, c1: int = 16, c2: int = 32):
    rng = np.random.default_rng(seed)
    params = {
        "stem": _normal(rng, (3, 3, 3, c1)),
        "block1": {"conv1": _normal(rng, (3, 3, c1, c1)), "conv2": _normal(rng, (3, 3, c1, c1))},
        "block2": {
            "conv1": _normal(rng, (3, 3, c1, c2)),
            "conv2": _normal(rng, (3, 3, c2, c2)),
            "shortcut": _normal(rng, (1, 1, c1, c2)),
        },
        "head": {"w": _normal(rng, (c2, o)), "b": _normal(rng, (o,), 0.1)},
    }
    x = _normal(np.random.default_rng(seed + 1), (n, size, size, 3))
    desc = f"WRN-ish conv {c1}/{c2} ch, {size}x{size}x3, O={o}, N={n}"
    return Model("conv", conv_apply, params, x, desc)


# ---------------------------------------------------------------------------------------------
# Small ViT


def _dense(h, p):
    return jnp.dot(h, p["w"]) / math.sqrt(p["w"].shape[0]) + p["b"]


def _layer_norm(h, p, eps: float = 1e-6):
    mean = jnp.mean(h, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(h - mean), axis=-1, keepdims=True)
    return (h - mean) * lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def _gelu(h):
    # tanh approximation, written out (jax.nn.gelu's signature changed across versions)
    return 0.5 * h * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * h * h * h)))


def _softmax(s):
    e = jnp.exp(s - lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True)))
    return e / jnp.sum(e, axis=-1, keepdims=True)


def _attention(h, p, heads: int):
    n, t, d = h.shape
    dh = d // heads

    def split(z):
        return z.reshape(n, t, heads, dh)

    q, k, v = split(_dense(h, p["q"])), split(_dense(h, p["k"])), split(_dense(h, p["v"]))
    a = _softmax(jnp.einsum("nqhd,nkhd->nhqk", q, k) / math.sqrt(dh))
    z = jnp.einsum("nhqk,nkhd->nqhd", a, v).reshape(n, t, d)
    return _dense(z, p["o"])


def vit_apply(params, x, patch: int = 4, heads: int = 4):
    n, hgt, wid, c = x.shape
    gh, gw = hgt // patch, wid // patch
    tokens = x.reshape(n, gh, patch, gw, patch, c).transpose(0, 1, 3, 2, 4, 5)
    tokens = tokens.reshape(n, gh * gw, patch * patch * c)
    h = _dense(tokens, params["embed"]) + params["pos"]
    for i in range(len([k for k in params if k.startswith("block")])):
        b = params[f"block{i}"]
        h = h + _attention(_layer_norm(h, b["ln1"]), b["attn"], heads)
        h = h + _dense(_gelu(_dense(_layer_norm(h, b["ln2"]), b["fc1"])), b["fc2"])
    h = jnp.mean(_layer_norm(h, params["ln"]), axis=1)
    return _dense(h, params["head"])


def vit(o: int = 8, n: int = 16, seed: int = 0, size=16, patch=4, dim=64, mlp_dim=128, depth=2):
    rng = np.random.default_rng(seed)

    def dense(a, b):
        return {"w": _normal(rng, (a, b)), "b": _normal(rng, (b,), 0.1)}

    def ln(d):
        return {"scale": 1.0 + _normal(rng, (d,), 0.1), "bias": _normal(rng, (d,), 0.1)}

    tokens = (size // patch) ** 2
    params = {"embed": dense(patch * patch * 3, dim), "pos": _normal(rng, (tokens, dim), 0.1)}
    for i in range(depth):
        params[f"block{i}"] = {
            "ln1": ln(dim),
            "attn": {k: dense(dim, dim) for k in ("q", "k", "v", "o")},
            "ln2": ln(dim),
            "fc1": dense(dim, mlp_dim),
            "fc2": dense(mlp_dim, dim),
        }
    params["ln"] = ln(dim)
    params["head"] = dense(dim, o)
    x = _normal(np.random.default_rng(seed + 1), (n, size, size, 3))
    desc = f"ViT {depth}x(dim {dim}, 4 heads, mlp {mlp_dim}), {tokens} tokens, O={o}, N={n}"
    return Model("vit", vit_apply, params, x, desc)


def convnet_apply(params, x):
    conv = lambda h, w, s: lax.conv_general_dilated(h, w, (s, s), "SAME", dimension_numbers=_DN)
    h = jnp.maximum(conv(x, params["c1"], 1), 0.0)
    h = jnp.maximum(conv(h, params["c2"], 2), 0.0)
    return h.mean((1, 2)) @ params["head"]


def convnet(o: int = 10, n: int = 8, seed: int = 0, channels: int = 32) -> Model:
    rng = np.random.default_rng(seed)
    c = channels
    params = {
        "c1": _normal(rng, (3, 3, 3, c), 1 / 3),
        "c2": _normal(rng, (3, 3, c, c), 1 / (3 * c**0.5)),
        "head": _normal(rng, (c, o), 1 / c**0.5),
    }
    x = _normal(np.random.default_rng(seed + 1), (n, 16, 16, 3))
    return Model("convnet", convnet_apply, params, x, f"ConvNet 2x conv{c} 16x16, N={n}")


# ---------------------------------------------------------------------------------------------
# ResNet-18 (ImageNet layout), plain jax.numpy

_RESNET18_STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))


def resnet18_apply(params, x):
    h = jnp.maximum(_conv(x, params["stem"], stride=2), 0.0)
    h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "SAME")
    for s, (_, stride) in enumerate(_RESNET18_STAGES):
        for i in range(2):
            b = params[f"stage{s}"][f"block{i}"]
            st = stride if i == 0 else 1
            r = jnp.maximum(_conv(h, b["conv1"], stride=st), 0.0)
            r = _conv(r, b["conv2"])
            shortcut = _conv(h, b["shortcut"], stride=st) if "shortcut" in b else h
            h = jnp.maximum(r + shortcut, 0.0)
    h = jnp.mean(h, axis=(1, 2))
    return _dense(h, params["head"])


def resnet18(o: int = 1000, n: int = 4, seed: int = 0, size: int = 32) -> Model:
    rng = np.random.default_rng(seed)
    params = {"stem": _normal(rng, (7, 7, 3, 64))}
    c_in = 64
    for s, (c, stride) in enumerate(_RESNET18_STAGES):
        stage = {}
        for i in range(2):
            block = {"conv1": _normal(rng, (3, 3, c_in, c)), "conv2": _normal(rng, (3, 3, c, c))}
            if i == 0 and (stride != 1 or c_in != c):
                block["shortcut"] = _normal(rng, (1, 1, c_in, c))
            stage[f"block{i}"] = block
            c_in = c
        params[f"stage{s}"] = stage
    params["head"] = {"w": _normal(rng, (512, o)), "b": _normal(rng, (o,), 0.1)}
    x = _normal(np.random.default_rng(seed + 1), (n, size, size, 3))
    desc = f"ResNet-18 (ImageNet layout), {size}x{size}x3, O={o}, N={n}"
    return Model("resnet18", resnet18_apply, params, x, desc)


# ---------------------------------------------------------------------------------------------
# Zoo models (architectures.build, as the command line builds them)


def zoo_config(name: str, o: int) -> dict | None:
    """The zoo's model config for a zoo model name (``wrn-D-K``, ``vit-S/P``), else None."""
    m = re.fullmatch(r"wrn-(\d+)-(\d+)", name)
    if m:
        depth, width = int(m.group(1)), int(m.group(2))
        return {"family": "wide_resnet", "depth": depth, "width": width, "num_classes": o}
    m = re.fullmatch(r"vit-(\w+/\d+)", name)
    if m:
        return {"family": "vit", "variant": m.group(1), "num_classes": o}
    return None


def zoo(name: str, o: int = 10, n: int = 16, seed: int = 0, size: int = 32) -> Model:
    """A zoo model through ``architectures.build`` (Flax linen, running BatchNorm statistics)."""
    import jax

    import architectures

    config = zoo_config(name, o)
    pure = architectures.build(config, key=jax.random.key(seed), input_shape=(size, size, 3))
    jax.block_until_ready(pure.params)
    params = jax.tree_util.tree_map(np.asarray, pure.params)
    x = _normal(np.random.default_rng(seed + 1), (n, size, size, 3))
    desc = f"zoo {name} (linen), {size}x{size}x3, O={o}, N={n}"
    return Model(name, pure.apply, params, x, desc)


def build(name: str, o: int = 8, n: int = 16, seed: int = 0, widths: tuple = ()) -> Model:
    """One of :data:`MODELS` with ``o`` outputs and ``n`` examples.

    ``widths`` resizes a model: for ``mlp`` the input and hidden widths (``(64, 512, 512)``
    gives 64-512-512-O), for ``convnet`` its channels (``(32,)``), for ``resnet18`` and the zoo
    models (``wrn-D-K``, ``vit-S/P``) the image side (``(32,)``: 32×32×3); the other models have
    one size.
    """
    if zoo_config(name, o) is not None:
        return zoo(name, o=o, n=n, seed=seed, **({"size": widths[0]} if widths else {}))
    if name == "resnet18":
        return resnet18(o=o, n=n, seed=seed, **({"size": widths[0]} if widths else {}))
    builders = {"mlp": mlp, "conv": conv, "vit": vit, "convnet": convnet}
    if name not in builders:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    if not widths:
        return builders[name](o=o, n=n, seed=seed)
    if name == "mlp":
        return mlp(o=o, n=n, seed=seed, widths=tuple(widths))
    if name == "convnet":
        (channels,) = widths
        return convnet(o=o, n=n, seed=seed, channels=channels)
    raise ValueError(f"model {name!r} has one size; got widths={widths}")
