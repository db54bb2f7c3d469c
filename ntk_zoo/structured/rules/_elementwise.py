"""Rules for elementwise primitives: sums and differences are identities (tilings when a scalar
is broadcast), products and selections are diagonals."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from ntk_zoo.structured._ir import Eqn
from ntk_zoo.structured._registry import register
from ntk_zoo.structured._structure import Structure


def _scaled(eqn: Eqn, idx: int, factor: Any) -> Structure:
    """``y = factor · w`` elementwise, with ``w`` and ``factor`` (``None`` for 1) each of ``y``'s
    rank or scalars, broadcast along their size-1 axes as binary ``lax`` primitives allow."""
    w, y = eqn.inputs[idx], eqn.outputs[0]
    if factor is not None:
        factor = jnp.asarray(factor).astype(y.dtype)
    f_shape = () if factor is None else factor.shape
    trace, diag, dense_y, squeeze = [], [], [], []
    for a, n in enumerate(y.shape):
        w_full = w.ndim > 0 and w.shape[a] == n
        f_full = len(f_shape) > 0 and f_shape[a] == n and n != 1
        if w_full and f_full:
            diag.append((a, a))
        elif w_full:
            trace.append((a, a))
        elif f_full:  # a tiled param meeting a varying factor
            dense_y.append(a)
        # else: the param is tiled along ``a`` and the factor constant: a broadcast axis
        if len(f_shape) > 0 and not f_full:
            squeeze.append(a)
    if factor is not None and factor.ndim > 0:
        factor = factor.reshape([n for a, n in enumerate(f_shape) if a not in squeeze])
        kept = [a for a in range(len(f_shape)) if a not in squeeze]
        order = dense_y + [a for a, _ in diag]
        factor = jnp.transpose(factor, [kept.index(a) for a in order])
    return Structure(trace=tuple(trace), diag=tuple(diag), dense_y=tuple(dense_y), d=factor)


@register("add", "add_any")
def add(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    return _scaled(eqn, idx, None)


@register("sub")
def sub(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    return _scaled(eqn, idx, None if idx == 0 else -1)


@register("neg", view=True)
def neg(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    return _scaled(eqn, idx, -1)


@register("optimization_barrier")
@register("convert_element_type", "copy", "copy_p", "reduce_precision", view=True)
def copy(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    return _scaled(eqn, idx, None)


@register("mul")
def mul(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    return _scaled(eqn, idx, args[1 - idx])


@register("div")
def div(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    assert idx == 0, "div is linear in its numerator only"
    return _scaled(eqn, idx, 1 / jnp.asarray(args[1]))


@register("select_n")
def select_n(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    assert idx > 0, "select_n is linear in its cases only"
    which = jnp.asarray(args[0])
    return _scaled(eqn, idx, (which.astype(jnp.int32) == idx - 1))
