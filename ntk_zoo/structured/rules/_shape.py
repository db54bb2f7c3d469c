"""Rules for primitives that move, select or sum elements: identities along the axes they keep,
small per-axis matrices (pads, slices, reversals, windows) along the axes they change."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from ntk_zoo.structured._ir import Eqn
from ntk_zoo.structured._registry import pullback, register
from ntk_zoo.structured._structure import Structure


def _axis_maps(eqn: Eqn, idx: int, maps: dict[int, Any]) -> Structure:
    """Same rank in and out; ``maps[axis]`` is the ``(y_size, w_size)`` matrix of a changed axis."""
    w = eqn.inputs[idx]
    dtype = eqn.outputs[0].dtype
    trace = tuple((a, a) for a in range(w.ndim) if a not in maps)
    return Structure(trace=trace, maps=tuple((a, a, m.astype(dtype)) for a, m in maps.items()))


def _selection(y_size: int, w_size: int, offset: Any, stride: int = 1) -> jax.Array:
    """``M[i, j] = 1`` where output ``i`` reads input ``j = offset + stride·i``."""
    i = jnp.arange(y_size)[:, None]
    j = jnp.arange(w_size)[None, :]
    return (j == offset + stride * i).astype(jnp.float32)


@register("broadcast_in_dim")
def broadcast_in_dim(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    if idx != 0:
        return pullback(eqn, idx, args)
    w, y = eqn.inputs[0], eqn.outputs[0]
    dims = eqn.params["broadcast_dimensions"]
    # Size-1 param axes stretched over the output are tilings: left out, like the new axes.
    return Structure(trace=tuple((a, b) for b, a in enumerate(dims) if w.shape[b] == y.shape[a]))


@register("transpose", view=True)
def transpose(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    return Structure(trace=tuple(enumerate(eqn.params["permutation"])))


@register("squeeze", view=True)
def squeeze(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    w = eqn.inputs[0]
    dims = {d % max(w.ndim, 1) for d in eqn.params["dimensions"]}
    kept = [b for b in range(w.ndim) if b not in dims]
    return Structure(trace=tuple(enumerate(kept)))


@register("expand_dims", view=True)
def expand_dims(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    y = eqn.outputs[0]
    dims = set(eqn.params["dimensions"])
    new = [a for a in range(y.ndim) if a not in dims]
    return Structure(trace=tuple((a, b) for b, a in enumerate(new)))


@register("reshape", view=True)
def reshape(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    if idx != 0 or eqn.params.get("dimensions") is not None:
        return pullback(eqn, idx, args)
    w, y = eqn.inputs[0], eqn.outputs[0]
    w_axes = [b for b in range(w.ndim) if w.shape[b] != 1]
    y_axes = [a for a in range(y.ndim) if y.shape[a] != 1]
    if [w.shape[b] for b in w_axes] == [y.shape[a] for a in y_axes]:
        return Structure(trace=tuple(zip(y_axes, w_axes)))  # only unit axes added or removed
    # Axes merged or split: the cotangent reshaped back is exactly this use's contribution.
    return pullback(eqn, idx, args)


@register("reduce_sum")
def reduce_sum(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    w, y = eqn.inputs[0], eqn.outputs[0]
    axes = sorted(a % w.ndim for a in eqn.params["axes"])
    kept = [b for b in range(w.ndim) if b not in axes]
    ones = jnp.ones([w.shape[b] for b in axes], y.dtype)
    return Structure(trace=tuple(enumerate(kept)), dense_w=tuple(axes), d=ones)


@register("concatenate")
def concatenate(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    axis = eqn.params["dimension"]
    offset = sum(v.shape[axis] for v in eqn.inputs[:idx])
    y_size, w_size = eqn.outputs[0].shape[axis], eqn.inputs[idx].shape[axis]
    return _axis_maps(eqn, idx, {axis: _selection(y_size, w_size, -offset)})


@register("pad")
def pad(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    if idx != 0:
        return pullback(eqn, idx, args)
    w, y = eqn.inputs[0], eqn.outputs[0]
    maps = {}
    for a, (lo, hi, interior) in enumerate(eqn.params["padding_config"]):
        if (lo, hi, interior) != (0, 0, 0):
            eye = jnp.eye(w.shape[a], dtype=y.dtype)
            maps[a] = lax.pad(eye, jnp.zeros((), y.dtype), [(lo, hi, interior), (0, 0, 0)])
    return _axis_maps(eqn, idx, maps)


@register("rev")
def rev(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    w = eqn.inputs[0]
    maps = {a: jnp.eye(w.shape[a])[::-1] for a in eqn.params["dimensions"]}
    return _axis_maps(eqn, idx, maps)


@register("slice")
def slice_(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    w, y = eqn.inputs[0], eqn.outputs[0]
    strides = eqn.params["strides"] or (1,) * w.ndim
    maps = {}
    for a, (start, stride) in enumerate(zip(eqn.params["start_indices"], strides)):
        if (start, stride, y.shape[a]) != (0, 1, w.shape[a]):
            maps[a] = _selection(y.shape[a], w.shape[a], start, stride)
    return _axis_maps(eqn, idx, maps)


def _clamped(start: Any, limit: int) -> Any:
    return jnp.clip(jnp.asarray(start), 0, limit)


@register("dynamic_slice")
def dynamic_slice(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    if idx != 0:
        return pullback(eqn, idx, args)
    w, y = eqn.inputs[0], eqn.outputs[0]
    maps = {}
    for a, start in enumerate(args[1 : 1 + w.ndim]):
        if y.shape[a] != w.shape[a]:
            maps[a] = _selection(y.shape[a], w.shape[a], _clamped(start, w.shape[a] - y.shape[a]))
    return _axis_maps(eqn, idx, maps)


@register("dynamic_update_slice")
def dynamic_update_slice(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    operand, update = eqn.inputs[0], eqn.inputs[1]
    y = eqn.outputs[0]
    starts = [_clamped(s, operand.shape[a] - update.shape[a]) for a, s in enumerate(args[2:])]
    if idx == 1:  # the update lands in a window of the output
        maps = {}
        for a, start in enumerate(starts):
            if update.shape[a] != y.shape[a]:
                maps[a] = _selection(update.shape[a], y.shape[a], start).T
        return _axis_maps(eqn, idx, maps)
    if idx == 0:  # the operand survives outside the window: a diagonal 0/1 mask
        inside = jnp.ones(update.shape, bool)
        mask = lax.dynamic_update_slice(jnp.zeros(operand.shape, bool), inside, starts)
        return Structure(diag=tuple((a, a) for a in range(y.ndim)), d=(~mask).astype(y.dtype))
    return pullback(eqn, idx, args)


@register("reduce_window_sum")
def reduce_window_sum(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    w, y = eqn.inputs[0], eqn.outputs[0]
    p = eqn.params
    maps = {}
    for a in range(w.ndim):
        window = (
            p["window_dimensions"][a],
            p["window_strides"][a],
            tuple(p["padding"][a]),
            p["base_dilation"][a],
            p["window_dilation"][a],
        )
        if window == (1, 1, (0, 0), 1, 1):
            continue

        def one_axis(v, window=window):
            dims, strides, padding, base, dilation = window
            return lax.reduce_window_sum_p.bind(
                v,
                window_dimensions=(dims,),
                window_strides=(strides,),
                padding=(padding,),
                base_dilation=(base,),
                window_dilation=(dilation,),
            )

        maps[a] = jax.jacfwd(one_axis)(jnp.zeros((w.shape[a],), y.dtype))
    return _axis_maps(eqn, idx, maps)
