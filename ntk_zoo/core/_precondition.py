"""Preconditioned kernels ``J D Jᵀ`` and kernels over a subset of the params.

A non-negative ``D`` (one value per parameter, or one per leaf) is a change of variables:
``f_D(q) = f(params + √D ⊙ (q - params))`` has ``f_D(params) = f(params)`` and Jacobian
``J √D`` at ``q = params``, so its NTK is ``J D Jᵀ`` — computed by every method on ``f_D``
unchanged, never with a dense ``D``. A leaf whose ``D`` is a scalar is a scalar multiple of the
param (structured derivatives keep its structure); an elementwise ``D`` is an elementwise
scaling (structured too, as a diagonal). A leaf with ``D = 0`` or ``False`` is not
differentiated at all: masks make the kernel cheaper, not just sparser.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ntk_zoo._compat import is_tracer

PyTree = Any


def path_predicate(
    params_filter: str | Sequence[str] | Callable[[str, Any], bool] | None,
) -> Callable[[str, Any], bool]:
    """A ``(path, value) -> bool`` predicate from a filter.

    ``None`` selects everything; a string (or several) is a regular expression searched in the
    ``/``-joined path (e.g. ``"kernel$"`` for weights only, ``"Dense_2/"`` for one layer); a
    callable receives the path string and the value.

    Example:
      >>> from ntk_zoo.core import path_predicate
      >>> keep = path_predicate("kernel$")
      >>> keep("Dense_0/kernel", None), keep("Dense_0/bias", None)
      (True, False)
    """
    if params_filter is None:
        return lambda path, value: True
    if callable(params_filter):
        return params_filter
    patterns = [params_filter] if isinstance(params_filter, str) else list(params_filter)
    compiled = [re.compile(p) for p in patterns]
    return lambda path, value: any(c.search(path) for c in compiled)


def path_string(path: tuple) -> str:
    """A pytree key path as ``a/b/0``, the form :func:`path_predicate`'s patterns match."""
    parts = []
    for k in path:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


class Preconditioned(NamedTuple):
    """``f_D`` over the kept param leaves (a list), and how to put dropped leaves back."""

    f: Callable[..., PyTree]
    params: list[jax.Array]
    kept: tuple[int, ...]
    treedef: Any
    # positions in ``params`` (the kept leaves) whose D is elementwise (an array, not a scalar):
    # ``f_D`` scales them elementwise, which structured derivatives record as a diagonal use
    elementwise: tuple[int, ...] = ()

    def restore(self, per_param: PyTree) -> PyTree:
        """A per-param kernel tree over ``params`` (a list) as one over all the leaves, the
        dropped ones contributing zeros."""
        leaves = jax.tree.leaves(per_param)
        zero = jnp.zeros_like(leaves[0])
        full = [zero] * self.treedef.num_leaves
        for i, k in zip(self.kept, leaves):
            full[i] = k
        return jax.tree.unflatten(self.treedef, full)


def _per_leaf(preconditioner: Any, params: PyTree) -> list[Any]:
    paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    strings = isinstance(preconditioner, str) or (
        isinstance(preconditioner, list | tuple)
        and preconditioner
        and all(isinstance(p, str) for p in preconditioner)
    )
    if callable(preconditioner) or strings:
        keep = path_predicate(preconditioner)
        return [keep(path_string(path), leaf) for path, leaf in paths_leaves]
    try:
        full = jax.tree.broadcast(preconditioner, params)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"preconditioner (structure {jax.tree.structure(preconditioner)}) is not shaped like "
            f"the params (structure {treedef}): give one array or scalar per param leaf (or a "
            "prefix, e.g. {'encoder': False, 'head': True}), a path regex, or a predicate "
            "(path, value) -> bool."
        ) from e
    return treedef.flatten_up_to(full)


def _scale(d: Any, leaf: Any, where: str) -> tuple[bool, Any]:
    """``(keep, √d)`` of one leaf (``√d`` ``None`` when the leaf is unscaled)."""
    if is_tracer(d):
        raise TypeError(
            f"preconditioner{where} is traced: D must be concrete (it is checked and fixed when "
            "the kernel is traced). Close over its value instead of passing it through jit."
        )
    arr = np.asarray(d)
    if arr.dtype == np.bool_:
        if arr.ndim == 0:
            return bool(arr), None
        arr = arr.astype(np.float64)
    if not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"preconditioner{where} has dtype {arr.dtype}; give numbers or booleans.")
    if arr.ndim and arr.shape != tuple(leaf.shape):
        raise ValueError(
            f"preconditioner{where} has shape {arr.shape}, but the param has shape "
            f"{tuple(leaf.shape)}: give an array of the param's shape, or a scalar for the leaf."
        )
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(
            f"preconditioner{where} has negative or non-finite entries (min {arr.min()}): "
            "J D Jᵀ is a kernel only for D ≥ 0 (e.g. Adam's 1/(√v + ε))."
        )
    if arr.ndim == 0:
        if arr == 0:
            return False, None
        if arr == 1:
            return True, None
    return True, np.sqrt(arr)


def precondition(f: Callable[..., PyTree], preconditioner: Any, params: PyTree) -> Preconditioned:
    """``f_D(q, x, **kwargs)`` with ``q`` the kept param leaves, whose NTK is ``J D Jᵀ``.

    Args:
      f: ``f(params, x, **kwargs)``.
      preconditioner: a pytree like ``params`` (or a prefix of it) of non-negative arrays of
        each leaf's shape, non-negative scalars, or booleans (a mask, as optax's); or a path
        regex / list of them, or a predicate ``(path, value) -> bool`` (as the adapters'
        ``params_filter``).
      params: the params.

    Returns:
      A :class:`Preconditioned`.
    """
    leaves, treedef = jax.tree.flatten(params)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    kept, scales = [], []
    for i, (d, leaf) in enumerate(zip(_per_leaf(preconditioner, params), leaves)):
        keep, s = _scale(d, leaf, paths[i])
        if keep:
            kept.append(i)
            scales.append(s)
    if not kept:
        raise ValueError(
            "preconditioner selects no parameter (every leaf has D = 0 or False): there would "
            "be nothing to differentiate. Check it against the param paths "
            f"{paths[:8]}{' …' if len(paths) > 8 else ''}."
        )

    def f_d(q: list, x: PyTree, **kwargs: Any) -> PyTree:
        full = list(leaves)
        for i, s, qi in zip(kept, scales, q):
            p = full[i]
            full[i] = qi if s is None else p + jnp.asarray(s, p.dtype) * (qi - p)
        return f(jax.tree.unflatten(treedef, full), x, **kwargs)

    elementwise = tuple(k for k, s in enumerate(scales) if s is not None and np.ndim(s))
    return Preconditioned(f_d, [leaves[i] for i in kept], tuple(kept), treedef, elementwise)
