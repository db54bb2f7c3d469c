"""Vision Transformer (Dosovitskiy et al., 2021), Haiku."""

from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp

from architectures._common import decode_vit_variant
from architectures.haiku.layers import Conv, Dense


def _attention(x, heads):
    n, t, d = x.shape
    q, k, v = (
        Dense(d, "standard", name=name)(x).reshape(n, t, heads, -1)
        for name in ("query", "key", "value")
    )
    scores = jnp.einsum("nthd,nshd->nhts", q, k) / jnp.sqrt(q.shape[-1]).astype(x.dtype)
    out = jnp.einsum("nhts,nshd->nthd", jax.nn.softmax(scores, -1), v).reshape(n, t, d)
    return Dense(d, "standard", name="out")(out)


def _block(h, v, name):
    with hk.name_scope(name):
        h = h + _attention(hk.LayerNorm(-1, True, True)(h), v.heads)
        m = jax.nn.gelu(Dense(v.mlp_dim, "standard")(hk.LayerNorm(-1, True, True)(h)))
        return h + Dense(v.width, "standard")(m)


class ViT(hk.Module):
    def __init__(
        self,
        variant="test/2",
        num_classes=10,
        pool="tok",
        intermediates=False,
        depth=None,
        width=None,
        heads=None,
        mlp_dim=None,
        scan=False,
        name=None,
    ):
        super().__init__(name=name)
        self.v = decode_vit_variant(variant, depth=depth, width=width, heads=heads, mlp_dim=mlp_dim)
        self.num_classes = num_classes
        self.pool, self.intermediates, self.scan = pool, intermediates, scan

    def __call__(self, x, is_training=False):
        v = self.v
        h = Conv(v.width, v.patch, v.patch, "standard", use_bias=True, name="embedding")(x)
        h = h.reshape(h.shape[0], -1, v.width)
        if self.pool == "tok":
            cls = hk.get_parameter("cls", (1, 1, v.width), h.dtype, jnp.zeros)
            h = jnp.concatenate([jnp.broadcast_to(cls, (h.shape[0], 1, v.width)), h], axis=1)
        pos = hk.get_parameter(
            "pos_embedding", (1, *h.shape[1:]), h.dtype, hk.initializers.RandomNormal(0.02)
        )
        h = h + pos
        out = {}
        if self.scan:  # "encoderblocks/~/encoderblock/...": each block's params, stacked
            stack = hk.layer_stack(v.depth, with_per_layer_inputs=True, name="encoderblocks")
            h, per_block = stack(lambda h: (_block(h, v, "encoderblock"),) * 2)(h)
            out.update({f"block_{i}": per_block[i] for i in range(v.depth)})
        for i in range(0 if self.scan else v.depth):
            h = _block(h, v, f"encoderblock_{i}")
            out[f"block_{i}"] = h
        h = hk.LayerNorm(-1, True, True, name="encoder_norm")(h)
        out["pre_logits"] = h[:, 0] if self.pool == "tok" else h.mean(axis=1)
        logits = Dense(self.num_classes, "standard", name="head")(out["pre_logits"])
        return (logits, out) if self.intermediates else logits
