"""Block sizes from a memory budget, using the compiled program's ``memory_analysis()``."""

from __future__ import annotations

import os
from typing import Any

import jax


def default_budget(fraction: float = 0.5) -> int:
    """A safe share of the default device's memory (of the host's free memory on CPU)."""
    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(fraction * (stats["bytes_limit"] - stats.get("bytes_in_use", 0)))
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(fraction * free)


def block_bytes(
    kernel_fn: Any, x1: Any, x2: Any, params: Any, kwargs: dict, size: int, layout: Any
) -> int:
    """Compiled memory estimate (arguments + outputs + temporaries) of one block."""
    from ntk_zoo.parallel._batched import _n, _rows

    n1 = _n(x1)
    size = min(size, n1)
    b1 = _rows(x1, 0, size, size)
    kw = layout.kwargs_rows(kwargs, 0, 0, size, size)
    if x2 is None:
        lowered = jax.jit(lambda a, p, k: kernel_fn(a, None, p, **k)).lower(b1, params, kw)
    else:
        b2 = _rows(x2, 0, min(size, _n(x2)), min(size, _n(x2)))
        kw2 = layout.kwargs_rows(kwargs, 1, 0, min(size, _n(x2)), min(size, _n(x2)))
        merged = {k: (kw[k], kw2[k]) if kw[k] is not kw2[k] else kw[k] for k in kw}
        lowered = jax.jit(lambda a, b, p, k: kernel_fn(a, b, p, **k)).lower(b1, b2, params, merged)
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
    kernel_fn: Any, x1: Any, x2: Any, params: Any, kwargs: dict, budget: int, layout: Any
) -> int:
    """The largest power-of-two block (up to the data size) whose estimate fits ``budget``."""
    from ntk_zoo.parallel._batched import _n

    n = max(_n(x1), 1 if x2 is None else _n(x2))
    size = 1 << (n - 1).bit_length()
    while size > 1 and block_bytes(kernel_fn, x1, x2, params, kwargs, size, layout) > budget:
        size //= 2
    if block_bytes(kernel_fn, x1, x2, params, kwargs, size, layout) > budget:
        raise MemoryError(
            f"Even a single-example block needs more than memory_budget={budget:,} bytes; "
            "raise the budget or use a cheaper method."
        )
    return min(size, n)
