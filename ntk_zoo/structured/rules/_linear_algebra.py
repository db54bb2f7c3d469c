"""Rules for ``dot_general`` and ``conv_general_dilated``: the bilinear primitives, where
structure pays most (a dense layer's Jacobian is ``x ⊗ I``; a convolution's is patches ⊗ I)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jax import lax

from ntk_zoo.structured._ir import Eqn
from ntk_zoo.structured._registry import pullback, register
from ntk_zoo.structured._structure import Structure


@register("dot_general")
def dot_general(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lhs, rhs = eqn.inputs
    contract, batch = (lc, rc), (lb, rb)
    other_idx = 1 - idx
    other = args[other_idx]
    w_ndim = (lhs, rhs)[idx].ndim
    o_ndim = (lhs, rhs)[other_idx].ndim
    w_free = [i for i in range(w_ndim) if i not in contract[idx] + batch[idx]]
    o_free = [i for i in range(o_ndim) if i not in contract[other_idx] + batch[other_idx]]
    nb = len(batch[0])
    # Output axes: batch, lhs free, rhs free.
    if idx == 0:
        w_pos = range(nb, nb + len(w_free))
        o_pos = range(nb + len(w_free), nb + len(w_free) + len(o_free))
    else:
        o_pos = range(nb, nb + len(o_free))
        w_pos = range(nb + len(o_free), nb + len(o_free) + len(w_free))
    d = jnp.transpose(other, (*o_free, *batch[other_idx], *contract[other_idx]))
    return Structure(
        trace=tuple(zip(w_pos, w_free)),
        diag=tuple((k, b) for k, b in enumerate(batch[idx])),
        dense_y=tuple(o_pos),
        dense_w=tuple(contract[idx]),
        d=d.astype(eqn.outputs[0].dtype),
    )


def _spec_strings(lhs: tuple, rhs: tuple, out: tuple) -> tuple[str, str, str]:
    """Integer dimension numbers as the letter strings ``conv_general_dilated_patches`` takes."""
    spatial = "HWDXYZUVST"

    def letters(spec: tuple, batch: str, feature: str) -> str:
        chars = [""] * len(spec)
        chars[spec[0]], chars[spec[1]] = batch, feature
        for i, axis in enumerate(spec[2:]):
            chars[axis] = spatial[i]
        return "".join(chars)

    return letters(lhs, "N", "C"), letters(rhs, "O", "I"), letters(out, "N", "C")


@register("conv_general_dilated")
def conv_general_dilated(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    if idx == 0:
        # The param is the image: each output pixel mixes a window of it, no identity to keep
        # beyond what the transpose (a transposed convolution) computes directly.
        return pullback(eqn, idx, args)
    p = eqn.params
    lhs = args[0]
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    w = eqn.inputs[1]
    filter_shape = [w.shape[i] for i in rhs_spec[2:]]
    patches = lax.conv_general_dilated_patches(
        lhs,
        filter_shape,
        p["window_strides"],
        p["padding"],
        p["lhs_dilation"],
        p["rhs_dilation"],
        _spec_strings(lhs_spec, rhs_spec, out_spec),
        precision=lax.Precision.HIGHEST,
    )
    # patches: laid out as the output; features ordered (in-channel, *filter spatial).
    n_spatial = len(filter_shape)
    patches = jnp.transpose(patches, (out_spec[0], *out_spec[2:], out_spec[1]))
    batch, *spatial, _ = patches.shape
    c_in = lhs.shape[lhs_spec[1]]
    patches = patches.reshape(batch, *spatial, c_in, *filter_shape)
    dense_y = (out_spec[0], *out_spec[2:])
    dense_w = (rhs_spec[1], *rhs_spec[2:])
    c_out = w.shape[rhs_spec[0]]
    fg, bg = p["feature_group_count"], p["batch_group_count"]
    dtype = eqn.outputs[0].dtype
    if fg == 1 and bg == 1:
        return Structure(
            trace=((out_spec[1], rhs_spec[0]),),
            dense_y=dense_y,
            dense_w=dense_w,
            d=patches.astype(dtype),
        )
    groups = fg if fg > 1 else bg
    group_of = jnp.arange(c_out) // (c_out // groups)  # group of each output channel
    if fg > 1:  # in-channels split in groups: output channel o sees group(o)'s channels
        grouped = patches.reshape(batch, *spatial, groups, c_in // groups, *filter_shape)
        d = jnp.take(grouped, group_of, axis=1 + n_spatial)
    else:  # batch split in groups: output channel o sees group(o)'s examples
        grouped = patches.reshape(groups, batch // groups, *spatial, c_in, *filter_shape)
        d = jnp.moveaxis(jnp.take(grouped, group_of, axis=0), 0, 1 + n_spatial)
    return Structure(
        diag=((out_spec[1], rhs_spec[0]),),
        dense_y=dense_y,
        dense_w=dense_w,
        d=d.astype(dtype),
    )
