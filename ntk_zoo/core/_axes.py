"""Output-axis conventions shared by every NTK method.

A kernel between outputs of shapes ``(a0, a1, ...)`` and ``(b0, b1, ...)`` has the interleaved
shape ``(a0, b0, a1, b1, ...)``. Traced axis pairs are contracted (and later divided by their
size), diagonal axis pairs keep one axis each, in place.

Every method first produces its kernel in the *canonical order*
``[diagonal axes..., free axes of side 1..., free axes of side 2...]`` (each group sorted by output
axis), the order of ``lax.dot_general`` with the diagonal axes as batch dimensions; ``to_layout``
then moves the axes into the interleaved order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np

Axes = int | Sequence[int]


def canonicalize_axes(axes: Axes, ndim: int, name: str) -> tuple[int, ...]:
    """Returns ``axes`` as a sorted tuple of distinct non-negative axes of an ``ndim`` array."""
    seq = (axes,) if isinstance(axes, int | np.integer) else tuple(axes)
    out = set()
    for a in seq:
        if not isinstance(a, int | np.integer):
            raise TypeError(f"`{name}` must hold integers, got {a!r} in {axes!r}.")
        if not -ndim <= a < ndim:
            raise ValueError(
                f"`{name}`={axes!r} is out of range for an output with {ndim} axes; "
                f"valid axes are {-ndim}..{ndim - 1}."
            )
        out.add(int(a) % ndim)
    return tuple(sorted(out))


class LeafAxes(NamedTuple):
    """The canonical trace / diagonal axes of one output leaf with ``ndim`` axes."""

    ndim: int
    trace: tuple[int, ...]
    diagonal: tuple[int, ...]

    @property
    def free(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.ndim) if i not in self.trace + self.diagonal)


def leaf_axes(trace_axes: Axes, diagonal_axes: Axes, ndim: int) -> LeafAxes:
    trace = canonicalize_axes(trace_axes, ndim, "trace_axes")
    diagonal = canonicalize_axes(diagonal_axes, ndim, "diagonal_axes")
    both = sorted(set(trace) & set(diagonal))
    if both:
        raise ValueError(
            f"`trace_axes` and `diagonal_axes` overlap on output axes {both} (of an output with "
            f"{ndim} axes): an axis pair is either traced (summed) or kept diagonal, not both. "
            "Remove those axes from one of the two arguments."
        )
    return LeafAxes(ndim, trace, diagonal)


def to_layout(kernel: jax.Array, axes: LeafAxes) -> jax.Array:
    """Moves a kernel from the canonical order to the interleaved NTK layout."""
    diag, free = axes.diagonal, axes.free
    position = {("d", i): k for k, i in enumerate(diag)}
    position |= {("1", i): len(diag) + k for k, i in enumerate(free)}
    position |= {("2", i): len(diag) + len(free) + k for k, i in enumerate(free)}
    perm = []
    for i in range(axes.ndim):
        if i in diag:
            perm.append(position["d", i])
        elif i not in axes.trace:
            perm += [position["1", i], position["2", i]]
    return kernel.transpose(perm)


def kernel_shape(shape1: Sequence[int], shape2: Sequence[int], axes: LeafAxes) -> tuple[int, ...]:
    """The interleaved kernel shape for outputs of shapes ``shape1`` and ``shape2``."""
    out = []
    for i in range(axes.ndim):
        if i in axes.diagonal:
            out.append(shape1[i])
        elif i not in axes.trace:
            out += [shape1[i], shape2[i]]
    return tuple(out)


def trace_size(shape: Sequence[int], axes: LeafAxes) -> int:
    return int(np.prod([shape[i] for i in axes.trace], dtype=np.int64))


def batch_mode(axes: LeafAxes, batch_axis: int) -> str:
    """How a kernel leaf treats the batch axis ``batch_axis`` of its output: ``"grid"`` (a pair
    of axes ``(n1, n2)``), ``"diagonal"`` (one axis ``n``: the pairs of the same example) or
    ``"trace"`` (summed out).

    Example:
      >>> from ntk_zoo.core import batch_mode, leaf_axes
      >>> [batch_mode(leaf_axes(t, d, 2), 0) for t, d in [((-1,), ()), ((), (0,)), ((0,), ())]]
      ['grid', 'diagonal', 'trace']
    """
    if batch_axis in axes.diagonal:
        return "diagonal"
    if batch_axis in axes.trace:
        return "trace"
    return "grid"
