"""Vision Transformer (Dosovitskiy et al., 2021), Flax NNX."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from architectures._common import decode_vit_variant
from architectures.nnx.layers import Conv, Dense, apply_stacked, stacked


class Attention(nnx.Module):
    def __init__(self, width, heads, *, rngs):
        self.query, self.key, self.value, self.out = (
            Dense(width, width, "standard", rngs=rngs) for _ in range(4)
        )
        self.heads = heads

    def __call__(self, x):
        n, t, d = x.shape
        q, k, v = (f(x).reshape(n, t, self.heads, -1) for f in (self.query, self.key, self.value))
        scores = jnp.einsum("nthd,nshd->nhts", q, k) / jnp.sqrt(q.shape[-1]).astype(x.dtype)
        out = jnp.einsum("nhts,nshd->nthd", jax.nn.softmax(scores, -1), v).reshape(n, t, d)
        return self.out(out)


class EncoderBlock(nnx.Module):
    def __init__(self, width, heads, mlp_dim, *, rngs):
        self.norm1, self.norm2 = nnx.LayerNorm(width, rngs=rngs), nnx.LayerNorm(width, rngs=rngs)
        self.attention = Attention(width, heads, rngs=rngs)
        self.mlp1 = Dense(width, mlp_dim, "standard", rngs=rngs)
        self.mlp2 = Dense(mlp_dim, width, "standard", rngs=rngs)

    def __call__(self, x):
        x = x + self.attention(self.norm1(x))
        return x + self.mlp2(jax.nn.gelu(self.mlp1(self.norm2(x))))


class ViT(nnx.Module):
    def __init__(
        self,
        input_shape,
        *,
        variant="test/2",
        num_classes=10,
        pool="tok",
        intermediates=False,
        depth=None,
        width=None,
        heads=None,
        mlp_dim=None,
        scan=False,
        rngs,
    ):
        v = decode_vit_variant(variant, depth=depth, width=width, heads=heads, mlp_dim=mlp_dim)
        self.embedding = Conv(
            input_shape[-1], v.width, v.patch, v.patch, "standard", use_bias=True, rngs=rngs
        )
        tokens = (input_shape[0] // v.patch) * (input_shape[1] // v.patch) + (pool == "tok")
        self.cls = nnx.Param(jnp.zeros((1, 1, v.width), jnp.float32)) if pool == "tok" else None
        self.pos_embedding = nnx.Param(
            0.02 * jax.random.normal(rngs.params(), (1, tokens, v.width), jnp.float32)
        )
        if scan:  # one EncoderBlock whose params have a leading depth axis (nnx.vmap)
            self.blocks = stacked(
                v.depth, lambda r: EncoderBlock(v.width, v.heads, v.mlp_dim, rngs=r), rngs
            )
        else:
            self.blocks = nnx.List(
                [EncoderBlock(v.width, v.heads, v.mlp_dim, rngs=rngs) for _ in range(v.depth)]
            )
        self.scan = scan
        self.encoder_norm = nnx.LayerNorm(v.width, rngs=rngs)
        self.head = Dense(v.width, num_classes, "standard", rngs=rngs)
        self.pool, self.intermediates = pool, intermediates

    def __call__(self, x):
        h = self.embedding(x)
        h = h.reshape(h.shape[0], -1, h.shape[-1])
        if self.cls is not None:
            cls = jnp.broadcast_to(self.cls[...], (h.shape[0], 1, h.shape[-1]))
            h = jnp.concatenate([cls, h], axis=1)
        h = h + self.pos_embedding[...]
        out = {}
        if self.scan:
            h, per_block = apply_stacked(self.blocks, h, every=True)
            out.update({f"block_{i}": y for i, y in enumerate(per_block)})
        for i, block in enumerate(() if self.scan else self.blocks):
            h = block(h)
            out[f"block_{i}"] = h
        h = self.encoder_norm(h)
        out["pre_logits"] = h[:, 0] if self.pool == "tok" else h.mean(axis=1)
        logits = self.head(out["pre_logits"])
        return (logits, out) if self.intermediates else logits
