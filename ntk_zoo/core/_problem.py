"""One NTK evaluation, checked and normalised once and handed to whichever method runs it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

import jax

from ntk_zoo.core import _checks
from ntk_zoo.core._axes import Axes, LeafAxes, leaf_axes
from ntk_zoo.core._vmap import (
    ResolvedVmap,
    VmapAxes,
    per_example_fn,
    resolve,
    split_kwargs,
    vmap_in_axes,
)

PyTree = Any
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Problem:
    """``f``, its arguments and the canonical axes of every output leaf.

    ``x2`` is ``None`` when the kernel is of ``x1`` with itself (work is shared).
    ``options`` holds the methods' options (e.g. ``StructuredOptions``), at most one of each
    type; a method reads its own with :meth:`option`.
    """

    f: Callable[..., PyTree]
    params: PyTree
    x1: PyTree
    x2: PyTree | None
    kwargs1: dict[str, PyTree]
    kwargs2: dict[str, PyTree]
    fx1: PyTree  # ShapeDtypeStructs
    fx2: PyTree
    axes: list[LeafAxes]  # per output leaf
    vmap: ResolvedVmap | None
    dtype: Any
    options: tuple[Any, ...] = ()

    def option(self, kind: type[T]) -> T:
        """The options of type ``kind`` this problem was made with, else ``kind()`` (their
        defaults: the method's automatic choices)."""
        for o in self.options:
            if isinstance(o, kind):
                return o
        return kind()

    @property
    def fx_treedef(self) -> Any:
        return jax.tree.structure(self.fx1)

    @property
    def f_example(self) -> Callable[[PyTree, PyTree, dict], PyTree]:
        assert self.vmap is not None
        return per_example_fn(self.f, self.vmap, self.fx_treedef)

    def vmap_in_axes(self, x: PyTree, kwargs: dict) -> tuple[PyTree, dict]:
        assert self.vmap is not None
        return vmap_in_axes(self.vmap, x, kwargs)


def make_problem(
    f: Callable[..., PyTree],
    x1: PyTree,
    x2: PyTree | None,
    params: PyTree,
    kwargs: dict[str, Any],
    trace_axes: Axes,
    diagonal_axes: Axes,
    vmap_axes: VmapAxes | None,
    options: tuple[Any, ...] = (),
) -> Problem:
    dtype = _checks.check_params(params)
    if x2 is x1:
        x2 = None
    kw1, kw2 = split_kwargs(kwargs, x2 is not None)

    def shapes(x, kw):
        return jax.eval_shape(lambda p, x, kw: f(p, x, **kw), params, x, kw)

    fx1 = shapes(x1, kw1)
    _checks.check_outputs(fx1)
    axes = [leaf_axes(trace_axes, diagonal_axes, leaf.ndim) for leaf in jax.tree.leaves(fx1)]
    rv = None if vmap_axes is None else resolve(vmap_axes, x1, kw1, fx1)
    if x2 is None:
        fx2 = fx1
    else:
        _checks.check_input_pair(x1, x2, None if rv is None else rv.x_axes)
        try:
            fx2 = shapes(x2, kw2)
        except Exception as e:
            describe = lambda x: [tuple(jax.numpy.shape(a)) for a in jax.tree.leaves(x)]
            raise ValueError(
                f"`f` fails on x2 (shapes {describe(x2)}) although it runs on x1 (shapes "
                f"{describe(x1)}): x1 and x2 must hold examples of the same shape. ({e})"
            ) from e
        _checks.check_outputs(fx2)
        if rv is not None:
            rv2 = resolve(vmap_axes, x2, kw2, fx2)
            if rv2.out_axes != rv.out_axes:
                raise ValueError("`vmap_axes` out_axes resolve differently for x1 and x2.")
        _checks.check_output_pair(fx1, fx2, axes)
    kinds = [type(o) for o in options]
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"make_problem: at most one options object of each type, got {options!r}.")
    return Problem(f, params, x1, x2, kw1, kw2, fx1, fx2, axes, rv, dtype, tuple(options))
