"""The block grid of a whole-dataset kernel: padded example blocks, their keyword arguments,
where the example axes sit in each output leaf, and the list of blocks to compute."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax

from ntk_zoo.core import batch_mode, pad_rows, split_kwargs

PyTree = Any


def n_examples(x: PyTree) -> int:
    """The number of examples (axis 0 of the first leaf)."""
    return jax.tree.leaves(x)[0].shape[0]


def side_kwargs(kwargs: dict[str, Any], side: int) -> dict[str, Any]:
    """The keyword arguments of one side (0: ``x1``, 1: ``x2``), by the core's convention."""
    return split_kwargs(kwargs, x2_given=True)[side]


def pair_kwargs(kw1: dict[str, Any], kw2: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`side_kwargs`: one dict, 2-tuples where the sides differ."""
    return {k: kw1[k] if kw1[k] is kw2[k] else (kw1[k], kw2[k]) for k in kw1}


class Layout:
    """Where the example axes sit in each kernel leaf: ``grid`` (n1, n2, ...), ``diagonal``
    (n, ...) or ``trace`` (summed out), and how to transpose a block for ``Θ(x2, x1)``."""

    def __init__(self, kernel_fn: Any, x: PyTree, params: PyTree, kwargs: dict):
        problem = kernel_fn.problem(x, None, params, **kwargs)
        if problem.vmap is None:
            raise ValueError(
                "batched tiles examples into blocks, which is exact only when examples are "
                "independent: give the kernel function vmap_axes (e.g. ntk_fn(f, vmap_axes=0)). "
                "Models whose examples interact (BatchNorm in 'coupled' mode) cannot be blocked."
            )
        if any(a not in (0, None) for a in problem.vmap.x_axes) or any(
            a != 0 for a in problem.vmap.out_axes
        ):
            raise ValueError(
                "batched needs the batch on axis 0 of the inputs and outputs (vmap_axes=0)."
            )
        self.kw_axes = problem.vmap.kw_axes
        self.modes, self.perms = [], []
        for axes in problem.axes:
            mode = batch_mode(axes, 0)
            self.modes.append(mode)
            perm, pos = [1, 0], 2
            for i in range(1, axes.ndim):
                if i in axes.diagonal:
                    perm.append(pos)
                    pos += 1
                elif i not in axes.trace:
                    perm += [pos + 1, pos]
                    pos += 2
            self.perms.append(perm)
        if len(set(self.modes)) > 1:
            raise ValueError("batched needs every output leaf to treat the batch axis alike.")
        self.mode = self.modes[0]
        self.treedef = jax.tree.structure(problem.fx1)
        self.paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(problem.fx1)[0]]

    def kwargs_rows(self, kwargs: dict, side: int, start: int, stop: int, size: int) -> dict:
        """Keyword arguments for one block: batched ones sliced, per side for 2-tuples."""
        out = {}
        for k, v in side_kwargs(kwargs, side).items():
            batched = any(a is not None for a in self.kw_axes.get(k, [None]))
            out[k] = pad_rows(v, start, stop, size) if batched else v
        return out


Task = tuple[int, int]


@dataclass(frozen=True)
class Plan:
    """One kernel ``Θ(x1, x2)`` cut into blocks of ``size`` examples per side.

    With ``x2 is None`` (``symmetric``) only the blocks ``(i, j)`` with ``j >= i`` are listed;
    the others are their transposes. Blocks are listed row by row, the same on every process.
    """

    kernel_fn: Any
    layout: Layout
    x1: PyTree
    x2: PyTree | None
    params: PyTree
    kwargs: dict
    size: int

    @classmethod
    def make(cls, kernel_fn, layout, x1, x2, params, kwargs, size: int) -> Plan:
        n = max(n_examples(x1), 0 if x2 is None else n_examples(x2))
        size = max(1, min(size, n))
        size = math.ceil(n / math.ceil(n / size))  # same number of blocks, least padding
        return cls(kernel_fn, layout, x1, x2, params, kwargs, size)

    @property
    def symmetric(self) -> bool:
        return self.x2 is None

    @property
    def n1(self) -> int:
        return n_examples(self.x1)

    @property
    def n2(self) -> int:
        return n_examples(self.x1 if self.x2 is None else self.x2)

    def tasks(self) -> list[Task]:
        b1, b2 = math.ceil(self.n1 / self.size), math.ceil(self.n2 / self.size)
        if self.layout.mode != "grid":
            return [(i, i) for i in range(b1)]
        return [(i, j) for i in range(b1) for j in range(b2) if not self.symmetric or j >= i]

    def ranges(self, task: Task) -> tuple[slice, slice]:
        """The example rows (of ``x1``) and columns (of ``x2``) block ``task`` covers."""
        i, j = task
        s = self.size
        return slice(i * s, min((i + 1) * s, self.n1)), slice(j * s, min((j + 1) * s, self.n2))

    def arguments(self, task: Task) -> tuple[tuple, tuple]:
        """``((x1 rows, kwargs), (x2 rows, kwargs))`` of one block, padded to ``size``."""
        r1, r2 = self.ranges(task)
        padded = self.layout.mode != "trace"  # a traced batch axis cannot be trimmed
        s1 = self.size if padded else r1.stop - r1.start
        s2 = self.size if padded else r2.stop - r2.start
        xs2 = self.x1 if self.symmetric else self.x2
        side2 = 0 if self.symmetric else 1
        a1 = pad_rows(self.x1, r1.start, r1.stop, s1)
        a1 = a1, self.layout.kwargs_rows(self.kwargs, 0, r1.start, r1.stop, s1)
        a2 = pad_rows(xs2, r2.start, r2.stop, s2)
        a2 = a2, self.layout.kwargs_rows(self.kwargs, side2, r2.start, r2.stop, s2)
        return a1, a2

    def compute(self, task: Task) -> list:
        """The output leaves of one block, on the default device."""
        (b1, kw1), (b2, kw2) = self.arguments(task)
        if self.symmetric and task[0] == task[1]:
            out = self.kernel_fn(b1, None, self.params, **kw1)
        else:
            out = self.kernel_fn(b1, b2, self.params, **pair_kwargs(kw1, kw2))
        return jax.tree.leaves(out)

    def block_shapes(self) -> list[jax.ShapeDtypeStruct]:
        """Shapes and dtypes of one block's output leaves (traced, nothing computed)."""
        (b1, kw1), (b2, kw2) = self.arguments(self.tasks()[0])
        kwargs = pair_kwargs(kw1, kw2)
        return jax.eval_shape(
            lambda a1, a2, p: jax.tree.leaves(self.kernel_fn(a1, a2, p, **kwargs)),
            b1,
            b2,
            self.params,
        )
