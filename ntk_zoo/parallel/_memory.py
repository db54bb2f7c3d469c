"""Block sizes from a memory budget, using the compiled program's ``memory_analysis()``."""

from __future__ import annotations

import os
from typing import Any

import jax

from ntk_zoo.core import pad_rows
from ntk_zoo.parallel._blocks import Layout, n_examples, pair_kwargs


def default_budget(fraction: float = 0.5) -> int:
    """A safe share of the default device's memory (of the host's free memory on CPU)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(fraction * (stats["bytes_limit"] - stats.get("bytes_in_use", 0)))
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(fraction * free)


def block_bytes(
    kernel_fn: Any, x1: Any, x2: Any, params: Any, kwargs: dict, size: int, layout: Layout
) -> int:
    """Compiled memory estimate (arguments + outputs + temporaries) of one block."""
    size1 = min(size, n_examples(x1))
    b1 = pad_rows(x1, 0, size1, size1)
    kw1 = layout.kwargs_rows(kwargs, 0, 0, size1, size1)
    if x2 is None:
        lowered = jax.jit(lambda a, p, k: kernel_fn(a, None, p, **k)).lower(b1, params, kw1)
    else:
        size2 = min(size, n_examples(x2))
        b2 = pad_rows(x2, 0, size2, size2)
        kw = pair_kwargs(kw1, layout.kwargs_rows(kwargs, 1, 0, size2, size2))
        lowered = jax.jit(lambda a, b, p, k: kernel_fn(a, b, p, **k)).lower(b1, b2, params, kw)
    stats = lowered.compile().memory_analysis()
    if stats is None:  # backend without an estimate: assume the arguments dominate
        return sum(a.size * a.dtype.itemsize for a in jax.tree.leaves((b1, params))) * 4
    return int(
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        + stats.temp_size_in_bytes
        - stats.alias_size_in_bytes
    )


def pick_block_size(
    kernel_fn: Any, x1: Any, x2: Any, params: Any, kwargs: dict, budget: int, layout: Layout
) -> int:
    """The largest power-of-two block (up to the data size) whose estimate fits ``budget``."""
    n = max(n_examples(x1), 1 if x2 is None else n_examples(x2))
    size = 1 << (n - 1).bit_length()
    while block_bytes(kernel_fn, x1, x2, params, kwargs, size, layout) > budget:
        if size == 1:
            raise MemoryError(
                f"Even a single-example block needs more than memory_budget={budget:,} bytes; "
                "raise the budget or use a cheaper method."
            )
        size //= 2
    return min(size, n)


OUT_BLOCK_FRACTION = 4  # with out=, a block spans at most 1/4 of the examples on each side


def out_block_cap(n: int) -> int:
    """The largest automatic block when the kernel goes to a file: ``⌈n/4⌉`` examples.

    A block is then at most 1/16 of the kernel, so writing into ``out`` keeps memory well
    below the kernel's size even when the budget would allow one whole-kernel block.
    """
    return max(1, -(-n // OUT_BLOCK_FRACTION))
