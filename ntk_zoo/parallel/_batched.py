"""``batched``: whole-dataset kernels in blocks, within a memory budget, over devices."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ntk_zoo.engine._ntk import KernelFn, ntk_fn
from ntk_zoo.parallel import _memory
from ntk_zoo.parallel._checkpoint import BlockStore, fingerprint

PyTree = Any


def _rows(tree: PyTree, start: int, stop: int, size: int) -> PyTree:
    """Rows ``start:stop`` of every leaf, padded to ``size`` rows by repeating the first row."""

    def take(a):
        block = a[start:stop]
        pad = size - block.shape[0]
        if pad:
            block = jnp.concatenate([block, jnp.repeat(block[:1], pad, axis=0)], axis=0)
        return block

    return jax.tree.map(take, tree)


def _n(x: PyTree) -> int:
    return jax.tree.leaves(x)[0].shape[0]


class _Layout:
    """Where the example axes sit in each kernel leaf: ``grid`` (n1, n2, ...), ``diagonal``
    (n, ...) or ``trace`` (summed out), and how to transpose a block for ``Θ(x2, x1)``."""

    def __init__(self, kernel_fn: KernelFn, x: PyTree, params: PyTree, kwargs: dict):
        problem = kernel_fn._problem(x, None, params, kwargs)
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
            mode = "diagonal" if 0 in axes.diagonal else "trace" if 0 in axes.trace else "grid"
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

    def kwargs_rows(self, kwargs: dict, side: int, start: int, stop: int, size: int) -> dict:
        """Keyword arguments for one block: batched ones sliced, per side for 2-tuples."""
        out = {}
        for k, v in kwargs.items():
            if isinstance(v, tuple) and len(v) == 2:
                v = v[side]
            batched = any(a is not None for a in self.kw_axes.get(k, [None]))
            out[k] = _rows(v, start, stop, size) if batched else v
        return out


def batched(
    kernel_fn: KernelFn,
    *,
    batch_size: int | None = None,
    memory_budget: int | None = None,
    mesh: jax.sharding.Mesh | bool | None = None,
    progress: bool = True,
    checkpoint_dir: str | None = None,
    accumulate_dtype: Any = None,
    output_chunk: int | None = None,
) -> Callable[..., PyTree]:
    """Computes ``kernel_fn(x1, x2, params, **kwargs)`` block by block; same signature.

    The examples (axis 0 of ``x1``, ``x2`` and the outputs) are tiled into blocks of any size:
    the last block is padded and trimmed, so nothing needs to divide anything. With
    ``x2=None`` only the blocks on and above the diagonal are computed; the others are their
    transposes. Finished blocks are accumulated on the host (NumPy), so the whole kernel never
    needs to fit on a device.

    Args:
      kernel_fn: from :func:`ntk_zoo.ntk_fn`, with ``vmap_axes`` (blocking is exact only for
        independent examples).
      batch_size: examples per block; ``None`` picks the largest block whose compiled memory
        estimate (``memory_analysis()``) fits ``memory_budget``, and halves it on an
        out-of-memory error.
      memory_budget: bytes a block may use; default half the device's (or host's) free memory.
      mesh: ``True`` for all local devices, or a ``jax.sharding.Mesh`` with one axis; blocks are
        then computed in groups, one per device, sharded with ``NamedSharding``. For several
        hosts, call ``jax.distributed.initialize()`` first and pass a mesh over
        ``jax.devices()``: every process computes its share and gathers the whole kernel.
      progress: show a tqdm bar (blocks done, rate, time left).
      checkpoint_dir: write each finished block there; a rerun resumes from them and gives the
        identical kernel. A checkpoint from other inputs, params or settings is refused.
      accumulate_dtype: dtype of the host result (default: the kernel's).
      output_chunk: for ``trace_axes=()`` kernels of ``(n, o)`` outputs, also tile the ``o``
        output directions in chunks of this size (for 100- or 1000-logit models).

    Example:
      >>> import jax.numpy as jnp, ntk_zoo
      >>> f = lambda p, x: jnp.tanh(x @ p)
      >>> kernel_fn = ntk_zoo.ntk_fn(f, vmap_axes=0)
      >>> big = ntk_zoo.batched(kernel_fn, batch_size=4, progress=False)
      >>> big(jnp.ones((10, 3)), None, jnp.ones((3, 2))).shape
      (10, 10)
    """
    if not isinstance(kernel_fn, KernelFn):
        raise TypeError("batched takes the kernel function returned by ntk_zoo.ntk_fn.")
    if output_chunk is not None:
        return _chunked_outputs(
            kernel_fn,
            output_chunk,
            batch_size=batch_size,
            memory_budget=memory_budget,
            mesh=mesh,
            progress=progress,
            checkpoint_dir=checkpoint_dir,
            accumulate_dtype=accumulate_dtype,
        )
    devices = _mesh(mesh)

    def run(x1: PyTree, x2: PyTree | None = None, params: PyTree = None, **kwargs: Any):
        params = kernel_fn.default_params if params is None else params
        layout = _Layout(kernel_fn, x1, params, kwargs)
        if layout.mode != "grid" and x2 is not None and _n(x2) != _n(x1):
            raise ValueError("A diagonal or traced batch axis needs x1 and x2 of equal size.")
        size = batch_size
        while True:
            if size is None:
                budget = memory_budget or _memory.default_budget()
                size = _memory.pick_block_size(kernel_fn, x1, x2, params, kwargs, budget, layout)
            try:
                return _compute(
                    kernel_fn,
                    layout,
                    x1,
                    x2,
                    params,
                    kwargs,
                    size,
                    devices,
                    progress,
                    checkpoint_dir,
                    accumulate_dtype,
                )
            except jax.errors.JaxRuntimeError as e:
                if "RESOURCE_EXHAUSTED" not in str(e) or size == 1 or batch_size is not None:
                    raise
                size //= 2  # back off instead of dying

    return run


def _mesh(mesh: Any) -> jax.sharding.Mesh | None:
    if mesh is None or mesh is False:
        return None
    if mesh is True:
        return jax.make_mesh((jax.device_count(),), ("blocks",))
    if len(mesh.axis_names) != 1:
        raise ValueError(f"batched needs a mesh with one axis, got axes {mesh.axis_names}.")
    return mesh


def _tasks(layout: _Layout, n1: int, n2: int, size: int, symmetric: bool) -> list[tuple]:
    b1, b2 = math.ceil(n1 / size), math.ceil(n2 / size)
    if layout.mode != "grid":
        return [(i, i) for i in range(b1)]
    return [(i, j) for i in range(b1) for j in range(b2) if not symmetric or j >= i]


def _compute(
    kernel_fn,
    layout,
    x1,
    x2,
    params,
    kwargs,
    size,
    mesh,
    progress,
    checkpoint_dir,
    accumulate_dtype,
):
    from tqdm.auto import tqdm

    symmetric = x2 is None
    xs2 = x1 if symmetric else x2
    n1, n2 = _n(x1), _n(xs2)
    size = max(1, min(size, max(n1, n2)))
    size = math.ceil(max(n1, n2) / math.ceil(max(n1, n2) / size))  # balanced: least padding
    tasks = _tasks(layout, n1, n2, size, symmetric)
    store = None
    if checkpoint_dir is not None:
        settings = dict(
            method=str(kernel_fn.method),
            trace=kernel_fn.trace_axes,
            diagonal=kernel_fn.diagonal_axes,
            vmap=repr(kernel_fn.vmap_axes),
            sum_params=kernel_fn.sum_params,
            block=size,
            f=getattr(kernel_fn.f, "__qualname__", repr(kernel_fn.f)),
            dtype=str(accumulate_dtype),
        )
        store = BlockStore(checkpoint_dir, fingerprint((x1, x2, params, kwargs), settings))

    def block_args(i, j):
        r1 = (i * size, min((i + 1) * size, n1))
        r2 = (j * size, min((j + 1) * size, n2))
        pad = size if layout.mode != "trace" else None  # a traced axis cannot be trimmed
        s1, s2 = pad or r1[1] - r1[0], pad or r2[1] - r2[0]
        a1 = _rows(x1, *r1, s1), layout.kwargs_rows(kwargs, 0, *r1, s1)
        a2 = _rows(xs2, *r2, s2), layout.kwargs_rows(kwargs, 1 if not symmetric else 0, *r2, s2)
        return r1, r2, a1, a2

    def one(i, j):
        _, _, (b1, kw1), (b2, kw2) = block_args(i, j)
        if symmetric and i == j:
            return kernel_fn(b1, None, params, **kw1)
        merged = {k: (kw1[k], kw2[k]) if kw1[k] is not kw2[k] else kw1[k] for k in kw1}
        return kernel_fn(b1, b2, params, **merged)

    results: dict[tuple, list[np.ndarray]] = {}
    todo = []
    for t in tasks:
        cached = store.load(t) if store else None
        if cached is not None:
            results[t] = cached
        else:
            todo.append(t)
    bar = tqdm(
        total=len(tasks),
        initial=len(tasks) - len(todo),
        desc="NTK blocks",
        unit="block",
        disable=not progress,
    )

    def finish(t, leaves):
        leaves = [np.asarray(a) for a in leaves]
        if store:
            store.save(t, leaves)
        results[t] = leaves
        bar.update(1)

    if mesh is None or layout.mode == "trace":  # traced blocks differ in size: one by one
        for t in todo:
            finish(t, jax.tree.leaves(one(*t)))
    else:
        _compute_sharded(todo, mesh, block_args, kernel_fn, params, layout, finish)
    bar.close()
    return _assemble(results, layout, n1, n2, size, symmetric, accumulate_dtype)


def _compute_sharded(todo, mesh, block_args, kernel_fn, params, layout, finish):
    """Groups of blocks, one per device, computed under ``jit`` with sharded stacks."""
    from jax.sharding import NamedSharding, PartitionSpec

    devices = mesh.devices.size
    sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))

    def stacked(x1s, kw1s, x2s, kw2s):
        def single(b1, k1, b2, k2):
            merged = {k: (k1[k], k2[k]) for k in k1}
            return jax.tree.leaves(kernel_fn(b1, b2, params, **merged))

        return jax.vmap(single)(x1s, kw1s, x2s, kw2s)

    compiled = jax.jit(stacked, in_shardings=sharding, out_shardings=sharding)
    for g in range(0, len(todo), devices):
        group = todo[g : g + devices]
        padded = group + [group[-1]] * (devices - len(group))
        args = [block_args(*t) for t in padded]
        out = compiled(*(_stack(args, side, k) for side, k in ((2, 0), (2, 1), (3, 0), (3, 1))))
        host = [np.asarray(a) for a in out]
        for index, t in enumerate(group):
            finish(t, [a[index] for a in host])


def _stack(args: list, side: int, k: int) -> PyTree:
    """Stacks item ``k`` (inputs or kwargs) of one side of every block's arguments."""
    return jax.tree.map(lambda *a: jnp.stack(a), *[a[side][k] for a in args])


def _assemble(results, layout, n1, n2, size, symmetric, accumulate_dtype):
    first = next(iter(results.values()))
    outs = []
    for leaf, (perm, mode) in enumerate(zip(layout.perms, layout.modes)):
        sample = first[leaf]
        dtype = accumulate_dtype or sample.dtype
        if mode == "grid":
            out = np.zeros((n1, n2, *sample.shape[2:]), dtype)
        elif mode == "diagonal":
            out = np.zeros((n1, *sample.shape[1:]), dtype)
        else:
            out = np.zeros(sample.shape, dtype)
        for (i, j), leaves in results.items():
            block = leaves[leaf]
            r1 = slice(i * size, min((i + 1) * size, n1))
            r2 = slice(j * size, min((j + 1) * size, n2))
            if mode == "grid":
                out[r1, r2] = block[: r1.stop - r1.start, : r2.stop - r2.start]
                if symmetric and i != j:
                    t = block.transpose(perm)
                    out[r2, r1] = t[: r2.stop - r2.start, : r1.stop - r1.start]
            elif mode == "diagonal":
                out[r1] = block[: r1.stop - r1.start]
            else:  # traced: each block is a mean over its own examples
                out += block * ((r1.stop - r1.start) / n1)
        outs.append(out)
    return jax.tree.unflatten(layout.treedef, outs)


def _chunked_outputs(kernel_fn: KernelFn, chunk: int, **options: Any) -> Callable[..., PyTree]:
    """Tiles the output directions too: ``Θ`` of the logits ``c_i`` against ``c_j``."""
    if kernel_fn.trace_axes not in ((), []) or kernel_fn.diagonal_axes not in ((), []):
        raise ValueError("output_chunk needs a kernel with trace_axes=() and diagonal_axes=().")
    f = kernel_fn.f

    def select(params, x, _ntk_outputs, **kwargs):
        return jnp.take(f(params, x, **kwargs), _ntk_outputs, axis=-1)

    vmap_axes = kernel_fn.vmap_axes
    chunk_fn = batched(
        ntk_fn(select, method=kernel_fn.method, trace_axes=(), vmap_axes=vmap_axes),
        **options,
    )

    def run(x1: PyTree, x2: PyTree | None = None, params: PyTree = None, **kwargs: Any):
        params = kernel_fn.default_params if params is None else params
        n_out = jax.eval_shape(
            lambda p: f(
                p,
                _rows(x1, 0, 1, 1),
                **{
                    k: v[0] if isinstance(v, tuple) and len(v) == 2 else v
                    for k, v in kwargs.items()
                },
            ),
            params,
        ).shape[-1]
        starts = list(range(0, n_out, chunk))
        index = [np.minimum(np.arange(s, s + chunk), n_out - 1) for s in starts]
        rows = []
        for i, si in enumerate(starts):
            row = []
            for j, sj in enumerate(starts):
                sel = (jnp.asarray(index[i]), jnp.asarray(index[j]))
                block = chunk_fn(x1, x1 if x2 is None else x2, params, _ntk_outputs=sel, **kwargs)
                row.append(
                    np.asarray(block)[..., : min(chunk, n_out - si), : min(chunk, n_out - sj)]
                )
            rows.append(np.concatenate(row, axis=-1))
        return np.concatenate(rows, axis=-2)

    return run
