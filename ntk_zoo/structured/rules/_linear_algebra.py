"""Rules for ``dot_general`` and ``conv_general_dilated``: the bilinear primitives, where
structure pays most (a dense layer's Jacobian is ``x ⊗ I``; a convolution's is patches ⊗ I)."""

from __future__ import annotations

import itertools
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


def _patches(
    lhs: Any,
    filter_shape: list[int],
    strides: tuple[int, ...],
    padding: tuple[tuple[int, int], ...],
    lhs_dilation: tuple[int, ...],
    rhs_dilation: tuple[int, ...],
    lhs_spec: tuple[int, ...],
) -> Any:
    """The convolution's input patches, ``(batch, *out spatial, *filter spatial, in-channel)``:
    the input padded (and dilated) once, then one strided slice per filter offset, each a
    contiguous block of channels (the filter axes before the channel axis: stacked the other
    way, every element is a strided write, and the stack cost WRN-16-4's pNTK about as much
    as the convolution it replaces).

    Pure data movement, so the values are the input's own. ``lax.conv_general_dilated_patches``
    gives the same numbers by a grouped convolution with a one-hot kernel, which XLA's CPU
    backend runs as a convolution: on WRN-16-4 (32×32×3, N=8, 2-core CPU) its four largest
    took 25-33 ms each of a 0.75 s pNTK call; the slices are copies (issue 22, ARCHITECTURE.md,
    "Where the pNTK's time goes").
    """
    x = jnp.transpose(lhs, (lhs_spec[0], *lhs_spec[2:], lhs_spec[1]))  # (N, *spatial, C)
    zero = jnp.zeros((), x.dtype)
    config = [(0, 0, 0)]
    config += [(lo, hi, d - 1) for (lo, hi), d in zip(padding, lhs_dilation)]
    config += [(0, 0, 0)]
    x = lax.pad(x, zero, config)
    spatial = x.shape[1:-1]
    out = [
        (n - (k - 1) * r - 1) // s + 1
        for n, k, r, s in zip(spatial, filter_shape, rhs_dilation, strides)
    ]
    slices = []
    for offset in itertools.product(*(range(k) for k in filter_shape)):
        start = [o * r for o, r in zip(offset, rhs_dilation)]
        limit = [b + (m - 1) * s + 1 for b, m, s in zip(start, out, strides)]
        slices.append(
            lax.slice(
                x,
                (0, *start, 0),
                (x.shape[0], *limit, x.shape[-1]),
                (1, *strides, 1),
            )
        )
    patches = jnp.stack(slices, axis=-2)  # (N, *out, filter offsets, C)
    return patches.reshape(*patches.shape[:-2], *filter_shape, patches.shape[-1])


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
    patches = _patches(
        lhs,
        filter_shape,
        p["window_strides"],
        p["padding"],
        p["lhs_dilation"],
        p["rhs_dilation"],
        lhs_spec,
    )
    n_spatial = len(filter_shape)
    batch, *spatial = patches.shape[: 1 + n_spatial]
    c_in = lhs.shape[lhs_spec[1]]
    dense_y = (out_spec[0], *out_spec[2:])
    dense_w = (*rhs_spec[2:], rhs_spec[1])  # the patches' order: filter spatial, in-channel
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
        grouped = patches.reshape(batch, *spatial, *filter_shape, groups, c_in // groups)
        d = jnp.take(grouped, group_of, axis=1 + 2 * n_spatial)
        d = jnp.moveaxis(d, 1 + 2 * n_spatial, 1 + n_spatial)  # (N, *out, c_out, *filter, c)
    else:  # batch split in groups: output channel o sees group(o)'s examples
        grouped = patches.reshape(groups, batch // groups, *spatial, *filter_shape, c_in)
        d = jnp.moveaxis(jnp.take(grouped, group_of, axis=0), 0, 1 + n_spatial)
    return Structure(
        diag=((out_spec[1], rhs_spec[0]),),
        dense_y=dense_y,
        dense_w=dense_w,
        d=d.astype(dtype),
    )
