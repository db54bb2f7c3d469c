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
        name=None,
    ):
        super().__init__(name=name)
        self.v = decode_vit_variant(variant, depth=depth, width=width, heads=heads, mlp_dim=mlp_dim)
        self.num_classes = num_classes
        self.pool, self.intermediates = pool, intermediates

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
        for i in range(v.depth):
            with hk.name_scope(f"encoderblock_{i}"):
                h = h + _attention(hk.LayerNorm(-1, True, True)(h), v.heads)
                m = jax.nn.gelu(Dense(v.mlp_dim, "standard")(hk.LayerNorm(-1, True, True)(h)))
                h = h + Dense(v.width, "standard")(m)
            out[f"block_{i}"] = h
        h = hk.LayerNorm(-1, True, True, name="encoder_norm")(h)
        out["pre_logits"] = h[:, 0] if self.pool == "tok" else h.mean(axis=1)
        logits = Dense(self.num_classes, "standard", name="head")(out["pre_logits"])
        return (logits, out) if self.intermediates else logits
