"""`vmap_axes`: the promise that ``f`` acts independently along a batch axis.

``vmap_axes`` is ``None``, a single axis ``v`` (meaning ``(v, v, {})``), or a triple
``(in_axes, out_axes, kwargs_axes)``: ``in_axes`` a pytree prefix of ``x`` (``None`` for leaves
without a batch axis), ``out_axes`` a pytree prefix of ``f``'s output, ``kwargs_axes`` a dict from
keyword-argument names to pytree prefixes of their values. With it, per-example Jacobians are
computed under ``jax.vmap``; without it, ``f`` runs on the whole batch (exact also when examples
interact, e.g. BatchNorm with batch statistics, but far more expensive).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

PyTree = Any


class VmapAxes(NamedTuple):
    """Batch axes of ``x``, of ``f``'s output and of keyword arguments."""

    in_axes: PyTree
    out_axes: PyTree
    kwargs_axes: dict[str, PyTree]


def canonicalize_vmap_axes(vmap_axes: Any) -> VmapAxes | None:
    if vmap_axes is None or isinstance(vmap_axes, VmapAxes):
        return vmap_axes
    if isinstance(vmap_axes, tuple) and len(vmap_axes) == 3:
        in_axes, out_axes, kwargs_axes = vmap_axes
        kwargs_axes = {} if kwargs_axes is None else kwargs_axes
        if not isinstance(kwargs_axes, dict):
            raise TypeError(
                "`vmap_axes` as a triple is (in_axes, out_axes, kwargs_axes) with kwargs_axes a "
                f"dict from keyword names to axes; got kwargs_axes={kwargs_axes!r}."
            )
        return VmapAxes(in_axes, out_axes, dict(kwargs_axes))
    return VmapAxes(vmap_axes, vmap_axes, {})


def _is_none(x: Any) -> bool:
    return x is None


def broadcast_axes(prefix: PyTree, tree: PyTree, what: str) -> list[int | None]:
    """Axes of ``prefix`` broadcast to the leaves of ``tree``, as a flat list."""
    try:
        full = jax.tree.broadcast(prefix, tree, is_leaf=_is_none)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"`vmap_axes` {what}={prefix!r} is not a pytree prefix of the structure it describes "
            f"({jax.tree.structure(tree)}). Give one axis per leaf, or a single int for all."
        ) from e
    leaves = jax.tree.leaves(full, is_leaf=_is_none)
    for a in leaves:
        if a is not None and not isinstance(a, int):
            raise TypeError(f"`vmap_axes` {what} must hold ints or None, got {a!r}.")
    return leaves


class ResolvedVmap(NamedTuple):
    """``VmapAxes`` matched against concrete inputs and outputs (flat, canonical axes)."""

    x_axes: list[int | None]
    kw_axes: dict[str, list[int | None]]
    out_axes: list[int]  # non-negative, per output leaf
    batch_size: int


def resolve(vm: VmapAxes, x: PyTree, kwargs: dict[str, PyTree], fx: PyTree) -> ResolvedVmap:
    """Checks ``vm`` against ``x``, ``kwargs`` and the output ``fx`` (shape structs allowed)."""
    x_leaves = jax.tree.leaves(x)
    x_axes = broadcast_axes(vm.in_axes, x, "in_axes")
    sizes = {}
    for i, (leaf, a) in enumerate(zip(x_leaves, x_axes)):
        if a is None:
            continue
        if not -leaf.ndim <= a < leaf.ndim:
            raise ValueError(
                f"`vmap_axes` in_axes={a} is out of range for input leaf {i} of shape "
                f"{tuple(leaf.shape)}."
            )
        sizes[f"x leaf {i}"] = leaf.shape[a]
    kw_axes = {}
    for name, value in kwargs.items():
        axes = broadcast_axes(vm.kwargs_axes.get(name), value, f"kwargs_axes[{name!r}]")
        kw_axes[name] = axes
        for leaf, a in zip(jax.tree.leaves(value), axes):
            if a is None:
                continue
            if not -jnp.ndim(leaf) <= a < jnp.ndim(leaf):
                raise ValueError(
                    f"`vmap_axes` kwargs_axes[{name!r}]={a} is out of range for a value of "
                    f"shape {tuple(jnp.shape(leaf))}."
                )
            sizes[f"kwarg {name!r}"] = jnp.shape(leaf)[a]
    if not sizes:
        raise ValueError(
            "`vmap_axes` maps no input: in_axes is None for every leaf of x. Give the batch axis "
            "of x (e.g. vmap_axes=0), or vmap_axes=None."
        )
    if len(set(sizes.values())) > 1:
        raise ValueError(f"`vmap_axes` batch axes disagree in size: {sizes}.")
    batch_size = next(iter(sizes.values()))

    fx_leaves = jax.tree.leaves(fx)
    out_axes = broadcast_axes(vm.out_axes, fx, "out_axes")
    canonical = []
    for i, (leaf, a) in enumerate(zip(fx_leaves, out_axes)):
        if a is None:
            raise ValueError(
                f"`vmap_axes` out_axes is None for output leaf {i}: every output leaf needs a "
                "batch axis."
            )
        if not -leaf.ndim <= a < leaf.ndim:
            raise ValueError(
                f"`vmap_axes` out_axes={a} is out of range for output leaf {i} of shape "
                f"{tuple(leaf.shape)}."
            )
        a %= leaf.ndim
        if leaf.shape[a] != batch_size:
            raise ValueError(
                f"`vmap_axes` is inconsistent with the output: out_axes={a} of output leaf {i} "
                f"(shape {tuple(leaf.shape)}) has size {leaf.shape[a]}, but the mapped inputs "
                f"have batch size {batch_size}. Fix out_axes, or pass vmap_axes=None."
            )
        canonical.append(a)
    return ResolvedVmap(x_axes, kw_axes, canonical, batch_size)


def _unflatten_like(tree: PyTree, leaves: list) -> PyTree:
    return jax.tree.unflatten(jax.tree.structure(tree), leaves)


def vmap_in_axes(rv: ResolvedVmap, x: PyTree, kwargs: dict[str, PyTree]) -> tuple[PyTree, dict]:
    """``in_axes`` trees for ``jax.vmap`` over ``(x, kwargs)``."""
    kw = {k: _unflatten_like(v, rv.kw_axes[k]) for k, v in kwargs.items()}
    return _unflatten_like(x, rv.x_axes), kw


def per_example_fn(
    f: Callable, rv: ResolvedVmap, fx_treedef: Any
) -> Callable[[PyTree, PyTree, dict], PyTree]:
    """``f_ex(params, x_ex, kwargs_ex)``: ``f`` on a single example, batch axes removed."""

    def expand(tree, axes):
        leaves = jax.tree.leaves(tree)
        return _unflatten_like(
            tree, [v if a is None else jnp.expand_dims(v, a) for v, a in zip(leaves, axes)]
        )

    def f_ex(params, x, kwargs):
        x = expand(x, rv.x_axes)
        kwargs = {k: expand(v, rv.kw_axes[k]) for k, v in kwargs.items()}
        out = jax.tree.leaves(f(params, x, **kwargs))
        return jax.tree.unflatten(fx_treedef, [jnp.squeeze(o, a) for o, a in zip(out, rv.out_axes)])

    return f_ex


def split_kwargs(kwargs: dict[str, Any], x2_given: bool) -> tuple[dict, dict]:
    """Keyword arguments for the x1 and x2 sides.

    As in neural-tangents, a 2-tuple value is ``(value for x1, value for x2)``; any other value is
    shared by both sides. (Unlike neural-tangents, a key named ``rng`` is not split: pass a
    2-tuple of keys for different randomness on each side.)
    """
    kw1, kw2 = {}, {}
    for k, v in kwargs.items():
        if isinstance(v, tuple) and len(v) == 2:
            kw1[k], kw2[k] = v
        else:
            kw1[k] = kw2[k] = v
    if not x2_given:
        kw2 = kw1
    return kw1, kw2
