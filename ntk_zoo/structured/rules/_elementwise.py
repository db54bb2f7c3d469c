"""Rules for elementwise primitives: sums and differences are identities (tilings when a scalar
is broadcast), products and selections are diagonals."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from ntk_zoo.structured._ir import Eqn
from ntk_zoo.structured._registry import register
from ntk_zoo.structured._structure import Structure, identity


def _scaled(eqn: Eqn, idx: int, scale: Any) -> Structure:
    """``y = scale · w`` with ``w`` either of ``y``'s shape or a scalar broadcast over it."""
    w, y = eqn.inputs[idx], eqn.outputs[0]
    if scale is not None:
        scale = jnp.asarray(scale, y.dtype)
    if w.shape == y.shape:
        return identity(y.ndim, scale)
    assert w.ndim == 0, (eqn.name, w.shape, y.shape)
    return Structure(d=scale)  # every output axis is a tiling of the scalar


@register("add", "add_any")
def add(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    return _scaled(eqn, idx, None)


@register("sub")
def sub(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    return _scaled(eqn, idx, None if idx == 0 else -1)


@register("neg")
def neg(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    return _scaled(eqn, idx, -1)


@register("convert_element_type", "copy", "copy_p", "reduce_precision", "optimization_barrier")
def copy(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    return _scaled(eqn, idx, None)


def _product(eqn: Eqn, idx: int, factor: Any) -> Structure:
    """``y = factor · w`` elementwise, ``factor`` of ``y``'s shape or scalar, likewise ``w``."""
    w, y = eqn.inputs[idx], eqn.outputs[0]
    factor = jnp.asarray(factor).astype(y.dtype)
    if factor.ndim == 0:
        return _scaled(eqn, idx, factor)
    if w.ndim == 0:  # a scalar param scaling an array: every output axis is dense
        return Structure(dense_y=tuple(range(y.ndim)), d=factor)
    return Structure(diag=tuple((a, a) for a in range(y.ndim)), d=factor)


@register("mul")
def mul(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    return _product(eqn, idx, args[1 - idx])


@register("div")
def div(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    assert idx == 0, "div is linear in its numerator only"
    return _product(eqn, idx, 1 / jnp.asarray(args[1]))


@register("select_n")
def select_n(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    assert idx > 0, "select_n is linear in its cases only"
    which = jnp.asarray(args[0])
    return _product(eqn, idx, (which.astype(jnp.int32) == idx - 1))
