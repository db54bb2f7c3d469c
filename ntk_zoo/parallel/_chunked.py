"""Output directions tiled too (``output_chunk=``): ``Θ`` of the logits ``c_i`` against ``c_j``.

Each pair of chunks is one blocked kernel of a function that selects those logits, with its
own checkpoint subdirectory ``chunk_<i>_<j>``; with ``out`` the pairs are written into the file
one by one. The block size is picked once, by the first pair, and kept for all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ntk_zoo.core import pad_rows
from ntk_zoo.engine import KernelFn, ntk_fn
from ntk_zoo.parallel._blocks import n_examples, side_kwargs
from ntk_zoo.parallel._destination import Destination
from ntk_zoo.parallel._sink import open_result
from ntk_zoo.parallel._stats import Stats
from ntk_zoo.parallel._team import Team

PyTree = Any


def selecting(kernel_fn: KernelFn) -> KernelFn:
    """The kernel function of ``f``'s logits at the indices ``_ntk_outputs=(i, j)``."""
    if kernel_fn.trace_axes not in ((), []) or kernel_fn.diagonal_axes not in ((), []):
        raise ValueError("output_chunk needs a kernel with trace_axes=() and diagonal_axes=().")
    if kernel_fn.cotangents is not None or kernel_fn.preconditioner is not None:
        raise ValueError("output_chunk tiles full kernels; it takes no cotangents= or D.")
    f = kernel_fn.f

    def select(params, x, _ntk_outputs, **kwargs):
        return jnp.take(f(params, x, **kwargs), _ntk_outputs, axis=-1)

    return ntk_fn(
        select,
        method=kernel_fn.method,
        trace_axes=(),
        vmap_axes=kernel_fn.vmap_axes,
        structured=kernel_fn.structured,
        vector_products=kernel_fn.vector_products,
    )


def chunked(
    kernel_fn: KernelFn,
    x1: PyTree,
    x2: PyTree | None,
    params: PyTree,
    kwargs: dict,
    *,
    chunk: int,
    team: Team,
    destination: Destination,
    checkpoint_dir: str | None,
    pair: Callable[[str, str | None, int | None], Any],
    stats: Stats,
) -> Any:
    """The ``(n1, n2, o, o)`` kernel, one pair of output chunks at a time.

    ``pair(gather, checkpoint_dir, batch_size)`` gives the blocked kernel function of one pair
    (of :func:`selecting`); its stats are summed into ``stats``.
    """
    first = team.process == team.processes[0]
    f, out, dtype = kernel_fn.f, destination.out, destination.accumulate_dtype
    example = jax.eval_shape(
        lambda p: f(p, pad_rows(x1, 0, 1, 1), **side_kwargs(kwargs, 0)), params
    )
    n_out = example.shape[-1]
    n1, n2 = n_examples(x1), n_examples(x1 if x2 is None else x2)
    shape = (n1, n2, n_out, n_out)
    gather = "process0" if out is not None else destination.gather
    target = None
    if out is not None and first:
        target = np.lib.format.open_memmap(out, "w+", dtype or example.dtype, shape)
    elif gather != "none" and (gather == "all" or first):
        target = np.zeros(shape, dtype or example.dtype)
    starts = list(range(0, n_out, chunk))
    index = [np.minimum(np.arange(s, s + chunk), n_out - 1) for s in starts]
    size = None  # picked from the budget by the first pair (unless given), then kept for all
    for i, si in enumerate(starts):
        for j, sj in enumerate(starts):
            directory = None if checkpoint_dir is None else f"{checkpoint_dir}/chunk_{i}_{j}"
            run = pair(gather, directory, size)
            sel = (jnp.asarray(index[i]), jnp.asarray(index[j]))
            block = run(x1, x1 if x2 is None else x2, params, _ntk_outputs=sel, **kwargs)
            stats.add(run.stats)
            size = run.stats.block_size
            if block is not None and target is not None:
                ci, cj = min(chunk, n_out - si), min(chunk, n_out - sj)
                target[..., si : si + ci, sj : sj + cj] = np.asarray(block)[..., :ci, :cj]
    if isinstance(target, np.memmap):
        target.flush()
    team.barrier("ntk_zoo.batched: chunks done")
    if target is None and out is not None and destination.gather == "all":
        target = open_result([out])[0]
    return target
