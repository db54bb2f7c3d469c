"""``ntk_fn``: the empirical NTK of any ``f(params, x)``."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from ntk_zoo._compat import is_tracer
from ntk_zoo.core import (
    Axes,
    Problem,
    PureFn,
    active_table,
    as_pure_fn,
    canonicalize_vmap_axes,
    check_cotangents,
    check_params,
    check_params_finite,
    trace_size,
    transformed_problem,
    tree_sum,
)
from ntk_zoo.engine import _cost
from ntk_zoo.engine._measure import covers, measure, measured_choice
from ntk_zoo.engine._method import Method, canonicalize_method
from ntk_zoo.engine._registry import METHODS
from ntk_zoo.engine._wisdom import AutoOptions, fingerprint, lookup, remember
from ntk_zoo.methods import VectorProductOptions
from ntk_zoo.structured import StructuredOptions

PyTree = Any


def _is_concrete_array(x: Any) -> bool:
    return isinstance(x, jax.Array | np.ndarray | np.generic)


_METHOD_OPTIONS = {"structured": StructuredOptions, "vector_products": VectorProductOptions}


def _check_options(caller: str, **options: Any) -> None:
    """Each of the methods' options is ``None`` or an instance of its type."""
    for name, value in options.items():
        kind = _METHOD_OPTIONS[name]
        if value is not None and not isinstance(value, kind):
            raise TypeError(
                f"{caller}({name}=...) takes an ntk_zoo.{kind.__name__} (or None), got {value!r}."
            )


def _signature(args: tuple, static: tuple) -> tuple:
    leaves, treedef = jax.tree.flatten(args)
    shapes = tuple((np.shape(a), str(getattr(a, "dtype", type(a).__name__))) for a in leaves)
    return treedef, shapes, static


class KernelFn:
    """``kernel_fn(x1, x2=None, params, **kwargs)`` returned by :func:`ntk_fn`.

    Pure and ``jax.jit``-compatible. ``x2=None`` means ``x1`` (work is shared). Keyword
    arguments go to ``f``; a 2-tuple value is ``(value for x1, value for x2)``. The methods'
    options (``structured``, ``vector_products``) are compile-time constants of its programs:
    :meth:`replace` gives a kernel function with others, compiled anew.

    ``kernels`` (default ``None``: the NTK) is what a call returns, computed inside the same
    compiled program: ``kernels(kernel_fn, x1, x2, params, kwargs, ntk)``, where ``ntk()`` gives
    the NTK (:func:`ntk_zoo.nngp_fn` and :func:`ntk_zoo.kernel_fn` are built on it).
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
        auto: AutoOptions | None = None,
        cotangents: Any = None,
        preconditioner: Any = None,
        structured: StructuredOptions | None = None,
        vector_products: VectorProductOptions | None = None,
        kernels: Callable[..., PyTree] | None = None,
    ):
        self.auto = AutoOptions() if auto is None else auto
        self.structured = structured or StructuredOptions()
        self.vector_products = vector_products or VectorProductOptions()
        self.kernels = kernels
        self._programs: dict[tuple, tuple[_cost.Choice, Any]] = {}  # measured auto's, by shapes
        self._by_method: dict[Method, Callable] = {}
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

    @property
    def _options(self) -> tuple:
        """The methods' options, as the problem carries them (hashable: a jit cache key)."""
        return (self.structured, self.vector_products)

    def _transformed(
        self,
        x1: PyTree,
        x2: PyTree | None,
        params: PyTree,
        kwargs: dict,
        options: tuple | None = None,
    ) -> tuple:
        if params is None:
            raise TypeError("kernel_fn needs `params`: call it as kernel_fn(x1, x2, params).")
        axes = (self.trace_axes, self.diagonal_axes, self.vmap_axes)
        extra = (self.cotangents, self.preconditioner)
        options = self._options if options is None else options
        return transformed_problem(self.f, x1, x2, params, kwargs, *axes, *extra, options)

    def choose(
        self, x1: PyTree, x2: PyTree | None = None, params: PyTree = None, **kwargs: Any
    ) -> _cost.Choice:
        """The method ``auto`` would run on these inputs, and the estimated seconds of each.

        Returns a pair ``(method, costs)`` (unpack it as such) whose ``.table`` is the
        :class:`ntk_zoo.core.CostTable` the estimates used; ``choice.table.source`` says which:
        the cache written by :func:`ntk_zoo.calibrate`, the row shipped with the package, or the
        default. With ``AutoOptions(measure=True)`` the pick is measured (or read from wisdom):
        ``choice.measured``, ``choice.source`` and ``choice.times`` say so, and a later call on
        the same shapes runs the program compiled while measuring."""
        params = self.default_params if params is None else params
        if not self.auto.measure:
            return _cost.cheapest(self._problem(x1, x2, params, kwargs))
        split = self._split(kwargs)
        if split is not None:  # already measured (and compiled) at these shapes
            sig = _signature((x1, x2, params, split[0]), (split[1], self._options))
            if self._programs.get(sig, (None,))[0] is not None:
                return self._programs[sig][0]
            choice, program = self._measured(x1, x2, params, kwargs)
            if program is not None:  # the next call at these shapes runs it
                self._programs[sig] = (choice, program)
            return choice
        return self._measured(x1, x2, params, kwargs)[0]

    def replace(self, **changes: Any) -> KernelFn:
        """A copy with some settings changed: ``kernel_fn.replace(method="jacobian_contraction")``,
        ``kernel_fn.replace(auto=ntk_zoo.AutoOptions(measure=True))``,
        ``kernel_fn.replace(structured=ntk_zoo.StructuredOptions(uses="jacobian"))``."""
        unknown = [k for k in changes if k.startswith("_") or not hasattr(self, k)]
        if unknown:
            raise TypeError(f"KernelFn.replace: no setting {unknown[0]!r}.")
        _check_options(
            "KernelFn.replace", **{k: v for k, v in changes.items() if k in _METHOD_OPTIONS}
        )
        defaults = {name: kind() for name, kind in _METHOD_OPTIONS.items()}
        changes = {k: defaults[k] if v is None and k in defaults else v for k, v in changes.items()}
        new = copy.copy(self)
        new.__dict__.pop("_jitted", None)
        new._programs, new._by_method = {}, {}
        for k, v in changes.items():
            setattr(new, k, canonicalize_method(v) if k == "method" else v)
        return new

    def _running(self, method: Method, program: Any, x1, x2, params, kwargs: dict) -> KernelFn:
        """A copy forced to ``method`` that runs ``program`` (that method's program compiled
        while measuring, for these shapes) on arguments of these shapes, and compiles anew
        for others."""
        new = self.replace(method=method)
        split = self._split(kwargs)
        if program is not None and split is not None:
            sig = _signature((x1, x2, params, split[0]), (split[1], new._options))
            new._programs[sig] = (None, program)
        return new

    def _settings(self) -> dict:
        return {
            "trace_axes": repr(self.trace_axes),
            "diagonal_axes": repr(self.diagonal_axes),
            "vmap_axes": repr(self.vmap_axes),
            "sum_params": self.sum_params,
            "auto": self.auto.key(),
            "structured": repr(self.structured),
            "vector_products": repr(self.vector_products),
        }

    def _measured(
        self, x1, x2, params, kwargs: dict, feed: Callable | None = None
    ) -> tuple[_cost.Choice, Any]:
        """The measured pick (wisdom, else timed now when the arguments are concrete, else the
        estimate) and, when timed now, the winner's compiled program (else ``None``).

        ``feed(method)``, if given, returns ``((x1, x2, kwargs), keep)`` for each timing call:
        arguments of the same shapes as these (another block of a whole-dataset kernel) and a
        function receiving that call's kernel, so that timing computes real blocks."""
        problem = self._problem(x1, x2, params, kwargs)
        key = fingerprint(problem, self._settings()) if self.auto.wisdom else None
        entry = lookup(key) if key else None
        if entry is not None and covers(entry, self.auto):  # else: time the methods it did not
            estimate = _cost.Choice(Method(entry["method"]), entry.get("costs", {}), active_table())
            stored = (entry.get("skipped", {}), "wisdom", entry.get("excluded", {}))
            return measured_choice(estimate, estimate.method, entry["times"], *stored), None
        estimate = _cost.cheapest(problem)
        split = self._split(kwargs)
        leaves = jax.tree.leaves((x1, x2, params, kwargs))
        if split is None or any(is_tracer(leaf) for leaf in leaves):
            return estimate, None  # nothing to time under a trace
        dynamic, static = split
        args = (x1, x2, params, dynamic)
        compile_method = lambda m: self._for_method(m).lower(*args, static, self._options).compile()

        def call(compiled: Any, method: Method) -> PyTree:
            if feed is None:
                return compiled(*args)
            (a1, a2, kw), keep = feed(method)
            out = compiled(a1, a2, params, self._split(kw)[0])
            keep(out)
            return out

        measured = measure(estimate, compile_method, call, self.auto)
        choice, compiled, compile_s = measured
        if key is not None and choice.source == "measured":
            entry = {"method": choice.method.value, "times": choice.times, "costs": choice.costs}
            entry.update(skipped=choice.skipped, excluded=choice.excluded, compile_s=compile_s)
            remember(key, entry)
        return choice, compiled

    @staticmethod
    def _split(kwargs: dict) -> tuple[dict, tuple] | None:
        """``kwargs`` as (array arguments, hashable compile-time constants); ``None`` if some
        non-array argument is unhashable."""
        dynamic, static = {}, []
        for k, v in kwargs.items():
            if all(_is_concrete_array(leaf) for leaf in jax.tree.leaves(v)):
                dynamic[k] = v
            else:
                static.append((k, v))
        try:
            hash(tuple(static))
        except TypeError:
            return None
        return dynamic, tuple(static)

    def _for_method(self, method: Method) -> Callable:
        """The jitted ``run`` of one method (what measuring compiles); its compile-time
        constants are the non-array keyword arguments and the methods' options."""
        if method not in self._by_method:

            def run(x1, x2, params, dynamic, static, options):
                kwargs = {**dynamic, **dict(static)}
                return self._compute(x1, x2, params, kwargs, method, options)

            self._by_method[method] = jax.jit(run, static_argnums=(4, 5))
        return self._by_method[method]

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
        split = self._split(kwargs)
        if split is None:  # unhashable non-array arguments: cannot be compile-time constants
            return self._compute(x1, x2, params, kwargs)
        dynamic, static = split
        measuring = self.method is Method.AUTO and self.auto.measure
        if measuring or self._programs:  # programs compiled while measuring, by shapes
            sig = _signature((x1, x2, params, dynamic), (static, self._options))
            if measuring and sig not in self._programs:  # measured once per shapes
                choice, program = self._measured(x1, x2, params, kwargs)
                if program is None:
                    run = self._for_method(choice.method)
                    program = run.lower(x1, x2, params, dynamic, static, self._options).compile()
                self._programs[sig] = (choice, program)
            if sig in self._programs:
                return self._programs[sig][1](x1, x2, params, dynamic)
        return self._jitted(x1, x2, params, dynamic, static, self._options)

    @functools.cached_property
    def _jitted(self) -> Callable:
        """The jitted kernel; its compile-time constants (its cache key beside the arrays'
        shapes) are the non-array keyword arguments and the methods' options."""

        def run(x1, x2, params, dynamic, static, options):
            return self._compute(x1, x2, params, {**dynamic, **dict(static)}, options=options)

        return jax.jit(run, static_argnums=(4, 5))

    def _compute(
        self,
        x1: PyTree,
        x2: PyTree | None,
        params: PyTree,
        kwargs: dict,
        method: Method | None = None,
        options: tuple | None = None,
    ) -> PyTree:
        if self.kernels is not None:
            ntk = lambda: self._ntk(x1, x2, params, kwargs, method, options)
            return self.kernels(self, x1, x2, params, kwargs, ntk)
        return self._ntk(x1, x2, params, kwargs, method, options)

    def _ntk(
        self,
        x1: PyTree,
        x2: PyTree | None,
        params: PyTree,
        kwargs: dict,
        method: Method | None,
        options: tuple | None,
    ) -> PyTree:
        """The NTK itself, whatever ``kernels`` returns around it."""
        problem, restore = self._transformed(x1, x2, params, kwargs, options)
        method, replay = method or self.method, None
        if method is Method.AUTO and self.auto.measure and self.auto.wisdom:
            entry = lookup(fingerprint(problem, self._settings()))  # under a trace: stored only
            method = Method.AUTO if entry is None else Method(entry["method"])
        if method is Method.AUTO:  # the picked method's own trace, where its estimate made one
            choice = _cost.cheapest(problem, replay=True, sum_params=self.sum_params)
            method, replay = choice.method, choice.replay
        per_leaf = replay() if replay else METHODS[method].compute(problem, self.sum_params)
        kernels = []
        for k, leaf, axes in zip(per_leaf, jax.tree.leaves(problem.fx1), problem.axes):
            if self.sum_params:  # a method may have summed already: then k is one array
                k = tree_sum(jax.tree.leaves(k))
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
    auto: AutoOptions | None = None,
    cotangents: Any = None,
    preconditioner: Any = None,
    structured: StructuredOptions | None = None,
    vector_products: VectorProductOptions | None = None,
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
      auto: how ``method="auto"`` decides (an :class:`~ntk_zoo.AutoOptions`); default: by the
        cost model's estimate. ``AutoOptions(measure=True)`` times the plausible methods on the
        first call at each shapes, runs the fastest (compiled once) and stores the pick as
        wisdom for later runs.
      structured: how structured derivatives contract each param leaf's uses (a
        :class:`~ntk_zoo.StructuredOptions`); default: by estimated cost, per leaf.
      vector_products: how NTK-vector products build their JVPs and split a symmetric kernel
        (a :class:`~ntk_zoo.VectorProductOptions`); default: the method's own choices.

    Every option is exact (they change time, not the kernel) and a compile-time constant: a
    kernel function's programs, and ``auto``'s estimates and wisdom, follow its options.

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
    if auto is not None and not isinstance(auto, AutoOptions):
        raise TypeError(f"ntk_fn(auto=...) takes an ntk_zoo.AutoOptions, got {auto!r}.")
    check_cotangents(cotangents)
    _check_options("ntk_fn", structured=structured, vector_products=vector_products)
    return KernelFn(
        f,
        method,
        trace_axes,
        diagonal_axes,
        canonicalize_vmap_axes(vmap_axes),
        bool(sum_params),
        default_params,
        auto,
        cotangents,
        preconditioner,
        structured,
        vector_products,
    )
