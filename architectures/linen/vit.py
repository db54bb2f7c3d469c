"""Vision Transformer (Dosovitskiy et al., 2021), Flax linen."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from architectures._common import decode_vit_variant
from architectures.linen.layers import Conv, Dense


class Attention(nn.Module):
    heads: int

    @nn.compact
    def __call__(self, x):
        n, t, d = x.shape
        q, k, v = (
            Dense(d, "standard", name=name)(x).reshape(n, t, self.heads, -1)
            for name in ("query", "key", "value")
        )
        scores = jnp.einsum("nthd,nshd->nhts", q, k) / jnp.sqrt(q.shape[-1]).astype(x.dtype)
        out = jnp.einsum("nhts,nshd->nthd", jax.nn.softmax(scores, -1), v).reshape(n, t, d)
        return Dense(d, "standard", name="out")(out)


class EncoderBlock(nn.Module):
    heads: int
    mlp_dim: int

    @nn.compact
    def __call__(self, x):
        x = x + Attention(self.heads)(nn.LayerNorm()(x))
        h = jax.nn.gelu(Dense(self.mlp_dim, "standard")(nn.LayerNorm()(x)))
        return x + Dense(x.shape[-1], "standard")(h)


class ViT(nn.Module):
    variant: str = "test/2"
    num_classes: int = 10
    pool: str = "tok"  # class token, or "gap" (mean over patches)
    intermediates: bool = False
    # Overrides of the named size (None or 0: the size's own); see decode_vit_variant.
    depth: int | None = None
    width: int | None = None
    heads: int | None = None
    mlp_dim: int | None = None
    # Stack the encoder blocks' params along a leading layer axis and apply them with nn.scan
    # (params["encoderblocks"]: each leaf of an "encoderblock_<i>" with a leading depth axis).
    scan: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        v = decode_vit_variant(
            self.variant,
            depth=self.depth,
            width=self.width,
            heads=self.heads,
            mlp_dim=self.mlp_dim,
        )
        h = Conv(v.width, v.patch, v.patch, "standard", use_bias=True, name="embedding")(x)
        h = h.reshape(h.shape[0], -1, v.width)
        if self.pool == "tok":
            cls = self.param("cls", nn.initializers.zeros, (1, 1, v.width))
            h = jnp.concatenate([jnp.broadcast_to(cls, (h.shape[0], 1, v.width)), h], axis=1)
        pos = self.param("pos_embedding", nn.initializers.normal(0.02), (1, *h.shape[1:]))
        h = h + pos
        out = {}
        if self.scan:
            layer = lambda block, h, _: (block(h),) * 2
            stack = nn.scan(
                layer, variable_axes={"params": 0}, split_rngs={"params": True}, length=v.depth
            )
            h, per_block = stack(EncoderBlock(v.heads, v.mlp_dim, name="encoderblocks"), h, None)
            out.update({f"block_{i}": per_block[i] for i in range(v.depth)})
        for i in range(0 if self.scan else v.depth):
            h = EncoderBlock(v.heads, v.mlp_dim, name=f"encoderblock_{i}")(h)
            out[f"block_{i}"] = h
        h = nn.LayerNorm(name="encoder_norm")(h)
        out["pre_logits"] = h[:, 0] if self.pool == "tok" else h.mean(axis=1)
        logits = Dense(self.num_classes, "standard", name="head")(out["pre_logits"])
        return (logits, out) if self.intermediates else logits
