"""Contracted outputs: the kernel ``v_iᵀ Θ(x_i, x_j) v_j`` as the NTK of a smaller function.

A cotangent ``v`` turns ``f(params, x)`` into ``g(params, x) = Σ v(x) · f(params, x)``, the sum
running over the output axes ``v`` covers (and over output leaves), with ``v`` held constant
(``lax.stop_gradient``). Then ``J_g = vᵀ J_f`` and the NTK of ``g`` is ``v_iᵀ Θ_f v_j``: every
method computes it on ``g`` unchanged, one VJP per example instead of one per output.

Which axes a cotangent covers, per output leaf of per-example shape ``e`` (the leaf's shape
without its example axis: the ``vmap_axes`` out axis, else axis 0):

* ``"pntk"``: all of them, ``v = 1/√O`` with ``O`` the number of outputs of one example over
  all leaves (the pseudo-NTK ``(1/O) Σ_ab Θ_ab`` of Mohamadi, Bae and Sutherland, 2023);
* an array of ``k`` axes: the last ``k`` axes of ``e``, with numpy broadcasting (size-1 axes of
  ``v`` repeat); the leading ``len(e) - k`` axes stay output axes of ``g``;
* a callable ``v(fx, x)`` of the outputs and inputs of a batch (as ``f`` sees them: a block, or
  one example under ``vmap_axes``) returning one array per output leaf, broadcastable to that
  leaf: all of them;
* ``None`` (a leaf of a pytree of cotangents): that output leaf does not contribute.

``trace_axes`` and ``diagonal_axes`` still name axes of ``f``'s outputs: covered axes leave them
(they are contracted by ``v``, with no division by their size); the others keep their meaning
on ``g``'s output. Contributing leaves must leave the same shape (they are summed).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ntk_zoo.core._axes import Axes, leaf_axes
from ntk_zoo.core._precondition import precondition
from ntk_zoo.core._problem import Problem, make_problem
from ntk_zoo.core._vmap import VmapAxes

PyTree = Any
Cotangents = str | Callable[..., PyTree] | PyTree

PNTK = "pntk"


class Contraction(NamedTuple):
    """``g`` and the axes of its one output array."""

    f: Callable[..., jax.Array]
    trace_axes: tuple[int, ...]
    diagonal_axes: tuple[int, ...]
    vmap_axes: VmapAxes | None


class _Leaf(NamedTuple):
    covered: tuple[int, ...]  # axes of the output leaf summed against the cotangent
    kept: tuple[int, ...]  # the other axes, in order (the example axis among them)


def check_cotangents(cotangents: Any) -> None:
    """Checks what can be checked before any output is seen."""
    if cotangents is None or callable(cotangents):
        return
    if isinstance(cotangents, str):
        if cotangents != PNTK:
            raise ValueError(
                f"cotangents={cotangents!r}: the one named cotangent is 'pntk' (v = 1/√O); "
                "otherwise give an array, a pytree of arrays or a callable v(fx, x)."
            )
        return
    for leaf in jax.tree.leaves(cotangents):
        if not hasattr(leaf, "shape") and not isinstance(leaf, int | float):
            raise TypeError(
                f"cotangents holds a {type(leaf).__name__}; its leaves must be arrays (or None "
                "for an output leaf that does not contribute)."
            )


def _leaf_cotangents(cotangents: Any, fx: PyTree) -> list[Any]:
    """The cotangent of each output leaf (``None``: no contribution)."""
    treedef = jax.tree.structure(fx)
    if isinstance(cotangents, str) or callable(cotangents):
        return [cotangents] * treedef.num_leaves
    try:
        full = jax.tree.broadcast(cotangents, fx, is_leaf=lambda v: v is None)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"cotangents (structure {jax.tree.structure(cotangents)}) is not a pytree prefix of "
            f"f's output (structure {treedef}): give one cotangent per output leaf (None where "
            "a leaf should not contribute)."
        ) from e
    return jax.tree.leaves(full, is_leaf=lambda v: v is None)


def contract_outputs(
    f: Callable[..., PyTree],
    cotangents: Cotangents,
    fx: PyTree,
    out_axes: list[int] | None,
    trace_axes: Axes,
    diagonal_axes: Axes,
    vmap_axes: VmapAxes | None,
) -> Contraction:
    """``g(params, x, **kwargs)``: ``f``'s outputs contracted with ``cotangents``.

    Args:
      f: ``f(params, x, **kwargs)``.
      cotangents: ``"pntk"``, an array or pytree of arrays (``None`` leaves allowed), or a
        callable ``v(fx, x)`` (see the module docstring for the axes each covers).
      fx: ``f``'s output shapes (``jax.ShapeDtypeStruct`` leaves) on a batch.
      out_axes: the example axis of each output leaf (``None``: axis 0 of every leaf).
      trace_axes: ``f``'s ``trace_axes``.
      diagonal_axes: ``f``'s ``diagonal_axes``.
      vmap_axes: ``f``'s canonical ``vmap_axes``, or ``None``.

    Returns:
      A :class:`Contraction`: ``g`` and the trace / diagonal / vmap axes of its output.
    """
    leaves = jax.tree.leaves(fx)
    batch = [0] * len(leaves) if out_axes is None else list(out_axes)
    per_leaf = _leaf_cotangents(cotangents, fx)
    total = sum(math.prod(s.shape) // max(s.shape[b], 1) for s, b in zip(leaves, batch))
    plans: list[_Leaf | None] = []
    for i, (leaf, b, v) in enumerate(zip(leaves, batch, per_leaf)):
        if v is None:
            plans.append(None)
            continue
        example = [a for a in range(leaf.ndim) if a != b]
        if isinstance(v, str) or callable(v):
            covered = tuple(example)
        else:
            shape = np.shape(v)
            if len(shape) > len(example):
                raise ValueError(
                    f"cotangent of shape {shape} for output leaf {i}, whose examples have shape "
                    f"{tuple(leaf.shape[a] for a in example)}: a cotangent covers some trailing "
                    "axes of one example's output, so it has at most as many axes."
                )
            covered = tuple(example[len(example) - len(shape) :])
            for a, s in zip(covered, shape):
                if s not in (1, leaf.shape[a]):
                    raise ValueError(
                        f"cotangent of shape {shape} does not broadcast to output leaf {i}'s "
                        f"examples of shape {tuple(leaf.shape[a] for a in example)}: give an "
                        "array broadcastable to the trailing axes of one example's output."
                    )
        plans.append(_Leaf(covered, tuple(a for a in range(leaf.ndim) if a not in covered)))
    used = [i for i, p in enumerate(plans) if p is not None]
    if not used:
        raise ValueError("cotangents is None for every output leaf: nothing contributes.")

    # The contracted output's axes, the same for every contributing leaf.
    mapped = set()
    for i in used:
        leaf, plan = leaves[i], plans[i]
        axes = leaf_axes(trace_axes, diagonal_axes, leaf.ndim)
        where = {a: k for k, a in enumerate(plan.kept)}
        mapped.add(
            (
                tuple(leaf.shape[a] for a in plan.kept),
                where[batch[i]],
                tuple(where[a] for a in axes.trace if a in where),
                tuple(where[a] for a in axes.diagonal if a in where),
            )
        )
    if len(mapped) > 1:
        raise ValueError(
            "cotangents leave output leaves of different shapes or axes after contraction "
            f"({sorted(m[0] for m in mapped)}), which cannot be summed: cover the same axes of "
            "every leaf, or pass None for the leaves to leave out."
        )
    _, new_batch, new_trace, new_diagonal = mapped.pop()
    treedef = jax.tree.structure(fx)

    def g(params: PyTree, x: PyTree, **kwargs: Any) -> jax.Array:
        out = f(params, x, **kwargs)
        outs = treedef.flatten_up_to(out)
        if callable(cotangents) and not isinstance(cotangents, str):
            given = cotangents(lax.stop_gradient(out), x)
            values = _leaf_cotangents(given, out)
        else:
            values = per_leaf
        total_out = None
        for i in used:
            y, plan, v = outs[i], plans[i], values[i]
            if isinstance(v, str):
                v = 1 / np.sqrt(total)
            v = lax.stop_gradient(jnp.asarray(v, y.dtype))
            if callable(cotangents) and not isinstance(cotangents, str):
                try:
                    fits = jnp.broadcast_shapes(v.shape, y.shape) == y.shape
                except ValueError:
                    fits = False
                if not fits:
                    raise ValueError(
                        f"the cotangent callable returned shape {v.shape} for output leaf {i} "
                        f"of shape {y.shape}: it must broadcast to the output leaf."
                    )
                term = (v * y).sum(axis=plan.covered) if plan.covered else v * y
            else:
                expand = [a for a in range(y.ndim) if a not in plan.covered]
                vb = jnp.expand_dims(v, expand) if v.ndim else v
                term = (vb * y).sum(axis=plan.covered) if plan.covered else vb * y
            total_out = term if total_out is None else total_out + term
        return total_out

    g_vmap = None
    if vmap_axes is not None:
        g_vmap = VmapAxes(vmap_axes.in_axes, new_batch, vmap_axes.kwargs_axes)
    return Contraction(g, new_trace, new_diagonal, g_vmap)


def transformed_problem(
    f: Callable[..., PyTree],
    x1: PyTree,
    x2: PyTree | None,
    params: PyTree,
    kwargs: dict[str, Any],
    trace_axes: Axes,
    diagonal_axes: Axes,
    vmap_axes: VmapAxes | None,
    cotangents: Cotangents | None = None,
    preconditioner: Any = None,
    options: tuple[Any, ...] = (),
) -> tuple[Problem, Callable[[PyTree], PyTree]]:
    """The :class:`Problem` of the kernel ``v_iᵀ J D Jᵀ v_j``: ``f`` preconditioned by ``D``
    (:func:`precondition`), then its outputs contracted with ``cotangents``
    (:func:`contract_outputs`); either may be ``None``. ``options``: the methods' options
    (:attr:`Problem.options`).

    Returns:
      The problem, and ``restore``: a per-param kernel tree over the problem's params (the
      leaves ``D`` keeps) as one over all of ``params`` (zeros for the dropped leaves).
    """
    restore = lambda per_param: per_param
    if preconditioner is not None:
        pre = precondition(f, preconditioner, params)
        f, params, restore = pre.f, pre.params, pre.restore
    if cotangents is not None:
        base = make_problem(f, x1, x2, params, kwargs, trace_axes, diagonal_axes, vmap_axes)
        out_axes = None if base.vmap is None else base.vmap.out_axes
        c = contract_outputs(
            f, cotangents, base.fx1, out_axes, trace_axes, diagonal_axes, vmap_axes
        )
        f, trace_axes, diagonal_axes, vmap_axes = c
    axes = (trace_axes, diagonal_axes, vmap_axes)
    problem = make_problem(f, x1, x2, params, kwargs, *axes, options)
    return problem, restore
