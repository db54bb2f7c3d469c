"""Where finished blocks go: host arrays, or ``.npy`` files written block by block.

A file sink writes each block's rows straight into the file at their offsets (``os.pwrite``),
never mapping the whole kernel: memory stays bounded by the blocks in flight, whatever ``N²``.
Blocks cover disjoint parts of the file, so several processes may write one file at once.
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np

from ntk_zoo.parallel._blocks import Plan, Task


def out_paths(out: str, paths: list[tuple]) -> list[str]:
    """One ``.npy`` file per output leaf.

    A kernel that is one array is written to ``out`` itself; a pytree of kernels to
    ``<stem>.<leaf path>.npy``, the leaf path as ``jax.tree_util.keystr(path, simple=True,
    separator=".")`` (``kernel.npy`` with outputs ``{"a": ..., "b": (..., ...)}`` gives
    ``kernel.a.npy``, ``kernel.b.0.npy`` and ``kernel.b.1.npy``).
    """
    if not out.endswith(".npy"):
        raise ValueError(f"out={out!r} must name a .npy file (e.g. out='kernel.npy').")
    if paths == [()]:
        return [out]
    stem = out[: -len(".npy")]
    return [f"{stem}.{jax.tree_util.keystr(p, simple=True, separator='.')}.npy" for p in paths]


def kernel_shapes(plan: Plan, block_shapes: list) -> list[tuple[int, ...]]:
    """The whole kernel's shape per leaf, from one block's."""
    shapes = []
    for mode, block in zip(plan.layout.modes, block_shapes):
        if mode == "grid":
            shapes.append((plan.n1, plan.n2, *block.shape[2:]))
        elif mode == "diagonal":
            shapes.append((plan.n1, *block.shape[1:]))
        else:
            shapes.append(tuple(block.shape))
    return shapes


class Sink:
    """Places blocks into the kernel: trims padding, mirrors symmetric blocks, sums traced ones.

    Subclasses store a region (``rows``, ``cols`` or ``None`` for a whole leaf).
    """

    def __init__(self, plan: Plan, dtypes: list, shapes: list[tuple[int, ...]]):
        self.plan, self.dtypes, self.shapes = plan, dtypes, shapes
        self.traced: dict[Task, list[np.ndarray]] = {}

    def write(self, leaf: int, rows: slice, cols: slice | None, data: np.ndarray) -> None:
        raise NotImplementedError

    def put(self, task: Task, leaves: list[np.ndarray]) -> None:
        plan = self.plan
        if plan.layout.mode == "trace":
            self.traced[task] = leaves
            return
        r1, r2 = plan.ranges(task)
        a, b = r1.stop - r1.start, r2.stop - r2.start
        for leaf, (block, perm) in enumerate(zip(leaves, plan.layout.perms)):
            block = np.asarray(block)
            if plan.layout.mode == "diagonal":
                self.write(leaf, r1, None, block[:a].astype(self.dtypes[leaf]))
                continue
            self.write(leaf, r1, r2, block[:a, :b].astype(self.dtypes[leaf]))
            if plan.symmetric and task[0] != task[1]:
                mirrored = block.transpose(perm)[:b, :a]
                self.write(leaf, r2, r1, mirrored.astype(self.dtypes[leaf]))

    def finish(self) -> None:
        """Writes traced kernels: each block is a mean over its own examples, weighted."""
        if not self.traced:
            return
        plan = self.plan
        for leaf, dtype in enumerate(self.dtypes):
            total = np.zeros(self.shapes[leaf], dtype)
            for task in plan.tasks():  # always the same order: reruns give identical sums
                r1, _ = plan.ranges(task)
                total += self.traced[task][leaf] * ((r1.stop - r1.start) / plan.n1)
            self.write(leaf, None, None, total)


class MemorySink(Sink):
    """The kernel as host NumPy arrays."""

    def __init__(self, plan: Plan, dtypes: list, shapes: list[tuple[int, ...]]):
        super().__init__(plan, dtypes, shapes)
        self.arrays = [np.zeros(s, d) for s, d in zip(shapes, dtypes)]

    def write(self, leaf, rows, cols, data):
        target = self.arrays[leaf]
        if rows is None:
            target[...] = data
        elif cols is None:
            target[rows] = data
        else:
            target[rows, cols] = data

    def result(self) -> list[np.ndarray]:
        return self.arrays


class FileSink(Sink):
    """The kernel as ``.npy`` files, one per leaf, written row segment by row segment.

    ``create``: this process makes the files (of the right shape and dtype, zero-filled and
    sparse); otherwise they must exist already (made by another process of the team).
    """

    def __init__(
        self, plan: Plan, dtypes: list, shapes: list[tuple[int, ...]], paths: list[str], create
    ):
        super().__init__(plan, dtypes, shapes)
        self.paths = paths
        if create:
            for path, shape, dtype in zip(paths, shapes, dtypes):
                directory = os.path.dirname(os.path.abspath(path))
                os.makedirs(directory, exist_ok=True)
                np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape).flush()
        self.offsets, self.fds = [], []
        for path, shape, dtype in zip(paths, shapes, dtypes):
            found = np.load(path, mmap_mode="r")
            if found.shape != tuple(shape) or found.dtype != np.dtype(dtype):
                raise ValueError(
                    f"{path!r} holds a {found.dtype} array of shape {found.shape}, not "
                    f"{np.dtype(dtype)} {tuple(shape)}: another process made it differently."
                )
            self.offsets.append(found.offset)
            del found
            self.fds.append(os.open(path, os.O_RDWR))

    def write(self, leaf, rows, cols, data):
        fd, offset, shape = self.fds[leaf], self.offsets[leaf], self.shapes[leaf]
        data = np.ascontiguousarray(data)
        item = data.dtype.itemsize
        if rows is None:
            os.pwrite(fd, data.tobytes(), offset)
        elif cols is None:
            row = math.prod(shape[1:]) * item
            os.pwrite(fd, data.tobytes(), offset + rows.start * row)
        else:
            inner = math.prod(shape[2:]) * item
            for k in range(data.shape[0]):
                at = offset + ((rows.start + k) * shape[1] + cols.start) * inner
                os.pwrite(fd, data[k].tobytes(), at)

    def sync(self) -> None:
        """Makes the blocks written so far durable (before they are marked done)."""
        for fd in self.fds:
            os.fdatasync(fd)

    def close(self) -> None:
        for fd in self.fds:
            os.fsync(fd)
            os.close(fd)
        self.fds = []

    def result(self) -> list[np.memmap]:
        self.close()
        return [np.lib.format.open_memmap(p, mode="r+") for p in self.paths]


def open_result(paths: list[str]) -> list[np.memmap]:
    """The kernel files another process wrote, mapped read-only."""
    return [np.lib.format.open_memmap(p, mode="r") for p in paths]


def files_match(paths: list[str], shapes: list[tuple[int, ...]], dtypes: list) -> bool:
    """Whether every kernel file exists with this shape and dtype (blocks marked in it stand)."""
    for path, shape, dtype in zip(paths, shapes, dtypes):
        try:
            found = np.load(path, mmap_mode="r")
        except (OSError, ValueError):
            return False
        if found.shape != tuple(shape) or found.dtype != np.dtype(dtype):
            return False
        del found
    return True
