"""``ntk_fn``: the empirical NTK of any ``f(params, x)``."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from ntk_zoo._compat import is_tracer
from ntk_zoo.core import (
    Axes,
    Problem,
    PureFn,
    as_pure_fn,
    canonicalize_vmap_axes,
    check_cotangents,
    check_params,
    check_params_finite,
    trace_size,
    transformed_problem,
)
from ntk_zoo.engine import _cost
from ntk_zoo.engine._method import Method, canonicalize_method
from ntk_zoo.engine._registry import METHODS

PyTree = Any


def _is_concrete_array(x: Any) -> bool:
    return isinstance(x, jax.Array | np.ndarray | np.generic)


class KernelFn:
    """``kernel_fn(x1, x2=None, params, **kwargs)`` returned by :func:`ntk_fn`.

    Pure and ``jax.jit``-compatible. ``x2=None`` means ``x1`` (work is shared). Keyword
    arguments go to ``f``; a 2-tuple value is ``(value for x1, value for x2)``.
    """

    def __init__(
        self,
        f: Callable[..., PyTree],
        method: Method,
        trace_axes: Axes,
        diagonal_axes: Axes,
        vmap_axes: Any,
        sum_params: bool,
        default_params: PyTree = None,
        cotangents: Any = None,
        preconditioner: Any = None,
    ):
        self.cotangents = cotangents
        self.preconditioner = preconditioner
        self.default_params = default_params
        self.f = f
        self.method = method
        self.trace_axes = trace_axes
        self.diagonal_axes = diagonal_axes
        self.vmap_axes = vmap_axes
        self.sum_params = sum_params

    def problem(
        self, x1: PyTree, x2: PyTree | None = None, params: PyTree = None, **kwargs: Any
    ) -> Problem:
        """The checked description of ``kernel_fn(x1, x2, params, **kwargs)`` that a method
        receives (a :class:`ntk_zoo.core.Problem`: canonical output axes, resolved ``vmap_axes``,
        output shapes); nothing is computed."""
        params = self.default_params if params is None else params
        return self._problem(x1, x2, params, kwargs)

    def _problem(self, x1: PyTree, x2: PyTree | None, params: PyTree, kwargs: dict) -> Problem:
        return self._transformed(x1, x2, params, kwargs)[0]

    def _transformed(self, x1: PyTree, x2: PyTree | None, params: PyTree, kwargs: dict) -> tuple:
        if params is None:
            raise TypeError("kernel_fn needs `params`: call it as kernel_fn(x1, x2, params).")
        axes = (self.trace_axes, self.diagonal_axes, self.vmap_axes)
        extra = (self.cotangents, self.preconditioner)
        return transformed_problem(self.f, x1, x2, params, kwargs, *axes, *extra)

    def choose(
        self, x1: PyTree, x2: PyTree | None = None, params: PyTree = None, **kwargs: Any
    ) -> _cost.Choice:
        """The method ``auto`` would run on these inputs, and the estimated seconds of each.

        Returns a pair ``(method, costs)`` (unpack it as such) whose ``.table`` is the
        :class:`ntk_zoo.core.CostTable` the estimates used; ``choice.table.source`` says which:
        the cache written by :func:`ntk_zoo.calibrate`, the row shipped with the package, or the
        default."""
        params = self.default_params if params is None else params
        return _cost.cheapest(self._problem(x1, x2, params, kwargs))

    def __call__(
        self, x1: PyTree, x2: PyTree | None = None, params: PyTree = None, **kwargs: Any
    ) -> PyTree:
        params = self.default_params if params is None else params
        if params is not None:
            check_params(params)
            check_params_finite(params)
        # Called on concrete values, run one compiled program (op-by-op dispatch would compile
        # every primitive separately); under a user's transformation, trace through.
        if any(is_tracer(leaf) for leaf in jax.tree.leaves((x1, x2, params, kwargs))):
            return self._compute(x1, x2, params, kwargs)
        dynamic, static = {}, []
        for k, v in kwargs.items():
            if all(_is_concrete_array(leaf) for leaf in jax.tree.leaves(v)):
                dynamic[k] = v
            else:
                static.append((k, v))
        try:
            hash(tuple(static))
        except TypeError:  # unhashable non-array arguments: cannot be compile-time constants
            return self._compute(x1, x2, params, kwargs)
        return self._jitted(x1, x2, params, dynamic, tuple(static))

    @functools.cached_property
    def _jitted(self) -> Callable:
        def run(x1, x2, params, dynamic, static):
            return self._compute(x1, x2, params, {**dynamic, **dict(static)})

        return jax.jit(run, static_argnums=4)

    def _compute(self, x1: PyTree, x2: PyTree | None, params: PyTree, kwargs: dict) -> PyTree:
        problem, restore = self._transformed(x1, x2, params, kwargs)
        method, replay = self.method, None
        if method is Method.AUTO:  # the picked method's own trace, where its estimate made one
            choice = _cost.cheapest(problem, replay=True)
            method, replay = choice.method, choice.replay
        per_leaf = replay() if replay else METHODS[method].compute(problem, self.sum_params)
        kernels = []
        for k, leaf, axes in zip(per_leaf, jax.tree.leaves(problem.fx1), problem.axes):
            if self.sum_params:  # a method may have summed already: then k is one array
                k = functools.reduce(operator.add, jax.tree.leaves(k))
            else:
                k = restore(k)
            scale = trace_size(leaf.shape, axes)
            kernels.append(jax.tree.map(lambda a, s=scale: (a / s).astype(problem.dtype), k))
        return jax.tree.unflatten(problem.fx_treedef, kernels)


def ntk_fn(
    f: Callable[..., PyTree] | PureFn,
    *,
    method: Method | str = Method.AUTO,
    trace_axes: Axes = (-1,),
    diagonal_axes: Axes = (),
    vmap_axes: Any = None,
    sum_params: bool = True,
    cotangents: Any = None,
    preconditioner: Any = None,
) -> KernelFn:
    """Returns ``kernel_fn(x1, x2, params, **kwargs)``, the empirical NTK of ``f``.

    ``Θ(x1, x2) = J(x1) J(x2)ᵀ`` with ``J = ∂f(params, x)/∂params``, summed over param leaves.
    Conventions are those of neural-tangents' ``empirical_ntk_fn``, number for number:

    * output axes are interleaved: outputs of shapes ``(a0, a1, ...)`` and ``(b0, b1, ...)``
      give a kernel of shape ``(a0, b0, a1, b1, ...)``;
    * ``trace_axes`` pairs are contracted and **divided by the product of their sizes** (a mean
      over logits by default); ``diagonal_axes`` pairs keep only their diagonal, one axis each;
    * a pytree output gets one kernel per leaf (no cross terms between leaves);
    * the result has the promoted dtype of the param leaves.

    Args:
      f: ``f(params, x, **kwargs)`` returning a float array or pytree of float arrays, or a
        :class:`~ntk_zoo.PureFn` (e.g. from :func:`~ntk_zoo.from_linen`): then ``params``
        defaults to its params and ``vmap_axes=None`` to its safe ``vmap_axes``.
      method: a :class:`Method` or its string value; ``"auto"`` picks by a cost model.
      trace_axes: output axes to trace over (negative and unordered allowed).
      diagonal_axes: output axes of which only the diagonal is kept.
      vmap_axes: ``None``, a batch axis ``v`` (for ``(v, v, {})``), or
        ``(in_axes, out_axes, kwargs_axes)``: a promise that ``f`` treats examples along these
        axes independently, so per-example Jacobians may be used. Wrong (silently) when examples
        interact, e.g. BatchNorm with batch statistics: then leave it ``None``.
      sum_params: if ``False``, each output leaf's kernel is instead a pytree shaped like
        ``params`` holding each param leaf's contribution (they sum to the kernel).

    Returns:
      A :class:`KernelFn`. It is pure; wrap it in ``jax.jit`` for repeated use.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import ntk_zoo
      >>> def f(params, x):
      ...     return jnp.tanh(x @ params["w1"]) @ params["w2"]
      >>> k1, k2 = jax.random.split(jax.random.key(0))
      >>> params = {"w1": jax.random.normal(k1, (3, 16)), "w2": jax.random.normal(k2, (16, 2))}
      >>> x = jax.random.normal(k2, (5, 3))
      >>> kernel_fn = ntk_zoo.ntk_fn(f, vmap_axes=0)
      >>> kernel_fn(x, None, params).shape
      (5, 5)
      >>> ntk_zoo.ntk_fn(f, trace_axes=())(x, None, params).shape
      (5, 5, 2, 2)
      >>> ntk_zoo.ntk_fn(f, vmap_axes=0, cotangents="pntk")(x, None, params).shape
      (5, 5)

    Reference: R. Novak, J. Sohl-Dickstein, S. S. Schoenholz, "Fast Finite Width Neural Tangent
    Kernel", ICML 2022.
    """
    pure = as_pure_fn(f, vmap_axes=vmap_axes, require_params=False, caller="ntk_fn")
    f, default_params, vmap_axes = pure.apply, pure.params, pure.vmap_axes
    method = canonicalize_method(method)
    check_cotangents(cotangents)
    return KernelFn(
        f,
        method,
        trace_axes,
        diagonal_axes,
        canonicalize_vmap_axes(vmap_axes),
        bool(sum_params),
        default_params,
        cotangents,
        preconditioner,
    )
