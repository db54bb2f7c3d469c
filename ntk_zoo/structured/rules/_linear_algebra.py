"""Rules for ``dot_general`` and ``conv_general_dilated``: the bilinear primitives, where
structure pays most (a dense layer's Jacobian is ``x ⊗ I``; a convolution's is patches ⊗ I)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import jax.numpy as jnp
from jax import lax

from ntk_zoo.structured._ir import Eqn
from ntk_zoo.structured._registry import pullback, register
from ntk_zoo.structured._structure import FactorCost, Structure


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


def _patch_slices(
    lhs: Any,
    filter_shape: list[int],
    strides: tuple[int, ...],
    padding: tuple[tuple[int, int], ...],
    lhs_dilation: tuple[int, ...],
    rhs_dilation: tuple[int, ...],
    lhs_spec: tuple[int, ...],
) -> list[Any]:
    """Per filter offset (row-major over the filter's spatial axes), the input values it
    multiplies, ``(batch, *out spatial, in-channel)``: the input padded (and dilated) once, then
    one strided slice."""
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
    return slices


def _patches(slices: list[Any], filter_shape: list[int]) -> Any:
    """The convolution's input patches, ``(batch, *out spatial, *filter spatial, in-channel)``:
    its :func:`_patch_slices` stacked, the filter axes before the channel axis (stacked the
    other way, every element is a strided write, and the stack cost WRN-16-4's pNTK about as
    much as the convolution it replaces).

    Pure data movement, so the values are the input's own. ``lax.conv_general_dilated_patches``
    gives the same numbers by a grouped convolution with a one-hot kernel, which XLA's CPU
    backend runs as a convolution: on WRN-16-4 (32×32×3, N=8, 2-core CPU) its four largest
    took 25-33 ms each of a 0.75 s pNTK call; the slices are copies (issue 22, ARCHITECTURE.md,
    "Where the pNTK's time goes").
    """
    patches = jnp.stack(slices, axis=-2)
    return patches.reshape(*patches.shape[:-2], *filter_shape, patches.shape[-1])


# The output columns (cotangents × out-channels) up to which a convolution kernel's Jacobian
# factor is formed offset by offset (``_kernel_factor``), when the convolution has unit strides
# and at least _PER_OFFSET_POSITIONS output positions; else by one product with the patches.
# Measured per example (N=16, WRN-16-4's conv shapes, 2-core XLA:CPU, CPU time, load 7-9;
# ARCHITECTURE.md, "Per-example convolution weight gradients").
_PER_OFFSET_COLUMNS = 128
_PER_OFFSET_POSITIONS = 256


def _kernel_factor(eqn: Eqn, slices: list[Any], patches: Any) -> tuple[Any, Any]:
    """``cts -> ∂f/∂y · ∂y/∂w`` for the kernel ``w`` of a convolution without groups: the
    per-example weight gradient ``G[o] = Σ_(b,p) patch[b, p] ⊗ ct[o, b, p]`` (``cts``: ``(O,
    *y.shape)``, the result ``(O, *w.shape)``), as matrix products instead of ``vmap`` of the
    convolution's transpose, which XLA:CPU runs as a grouped convolution at 4-24 GFLOP/s.

    With few output columns (``O·c_out ≤ _PER_OFFSET_COLUMNS``, one cotangent: the pNTK) on
    unit strides and at least ``_PER_OFFSET_POSITIONS`` output positions, one product per filter
    offset of its input slice (``slices``, :func:`_patch_slices`) and the cotangents (no patch
    buffer); else one product of the patches (their stack, shared with the structured
    contraction where it also runs) and the cotangents.
    Exact: the same sums as the transpose, in another order.

    Returns ``(factor, cost)``: ``cost(o)`` says what the per-offset products run for ``o``
    cotangents (:class:`FactorCost`), ``None`` where the one product with the patches runs (the
    estimate prices that as the einsum of the structure, with the patches' extraction).
    The per-offset products are priced as one product of the ``window·c_in`` slice rows by
    the ``o·c_out`` cotangent columns (the offsets share the laid-out cotangents, which stay in
    cache), each slice and the cotangents written once as an operand and read once, the parts
    written and then stacked: ``2·(window·positions·c_in + o·positions·c_out + out)`` values.
    Measured per example leaf (N=16, O=8, 2-core XLA:CPU, load 2.5, 21 alternating rounds,
    medians): 16×16×16 -> 16, 2.38 ms (priced 2.15; as the einsum with the patches, 5.02);
    16×16×3 -> 16, 0.81 ms (priced 1.06; before, 1.92); N=32, 4.84 ms (4.30; 10.05)."""
    p = eqn.params
    _, rhs_spec, out_spec = p["dimension_numbers"]
    w = eqn.inputs[1]
    dtype = eqn.outputs[0].dtype
    n_spatial = len(rhs_spec) - 2
    filter_shape = [w.shape[i] for i in rhs_spec[2:]]
    c_in, c_out = w.shape[rhs_spec[1]], w.shape[rhs_spec[0]]
    positions = math.prod(patches.shape[: 1 + n_spatial])  # examples × output positions
    # the result's axes (outputs, c_out, *filter, c_in) -> the kernel's own order
    have = (rhs_spec[0], *rhs_spec[2:], rhs_spec[1])
    to_w = [1 + have.index(a) for a in range(len(have))]
    hi = lax.Precision.HIGHEST
    strides = p["window_strides"]
    unit = all(s == 1 for s in strides) and positions >= _PER_OFFSET_POSITIONS
    per_offset = lambda o: unit and o * c_out <= _PER_OFFSET_COLUMNS

    def factor(cts: Any) -> Any:
        o = cts.shape[0]
        # (O, batch, *out spatial, c_out) -> (O, positions, c_out)
        order = (0, *(1 + a for a in (out_spec[0], *out_spec[2:], out_spec[1])))
        g = jnp.transpose(cts, order).reshape(o, positions, c_out).astype(dtype)
        if per_offset(o):
            dims = (((0,), (1,)), ((), ()))
            parts = [
                lax.dot_general(s.reshape(positions, c_in).astype(dtype), g, dims, precision=hi)
                for s in slices
            ]  # each (c_in, O, c_out)
            r = jnp.stack(parts).reshape(*filter_shape, c_in, o, c_out)
            r = jnp.moveaxis(r, (n_spatial + 1, n_spatial + 2), (0, 1))  # (O, c_out, *f, c_in)
        else:
            flat = patches.reshape(positions, -1).astype(dtype)
            r = lax.dot_general(g, flat, (((1,), (0,)), ((), ())), precision=hi)
            r = r.reshape(o, c_out, *filter_shape, c_in)
        return jnp.transpose(r, (0, *to_w))

    def cost(o: int) -> FactorCost | None:
        if not per_offset(o):
            return None
        window = math.prod(filter_shape)
        out = o * c_out * window * c_in
        values = 2 * (window * positions * c_in + o * positions * c_out + out)
        return FactorCost(window, window * c_in, positions, o * c_out, values, out, reads_d=False)

    return factor, cost


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
    conv = (p["window_strides"], p["padding"], p["lhs_dilation"], p["rhs_dilation"], lhs_spec)
    slices = _patch_slices(lhs, filter_shape, *conv)  # one pad and one slice per filter offset
    patches = _patches(slices, filter_shape)
    n_spatial = len(filter_shape)
    batch, *spatial = patches.shape[: 1 + n_spatial]
    c_in = lhs.shape[lhs_spec[1]]
    dense_y = (out_spec[0], *out_spec[2:])
    dense_w = (*rhs_spec[2:], rhs_spec[1])  # the patches' order: filter spatial, in-channel
    c_out = w.shape[rhs_spec[0]]
    fg, bg = p["feature_group_count"], p["batch_group_count"]
    dtype = eqn.outputs[0].dtype
    if fg == 1 and bg == 1:
        factor, cost = _kernel_factor(eqn, slices, patches)
        return Structure(
            trace=((out_spec[1], rhs_spec[0]),),
            dense_y=dense_y,
            dense_w=dense_w,
            d=patches.astype(dtype),
            factor=factor,
            factor_cost=cost,
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
