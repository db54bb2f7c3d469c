"""Structured derivatives' operand layouts, A/B in one process (issue 20, item 4).

``python -m benchmarks.layout_ab MODEL N [O] [ROUNDS]`` (``MODEL`` as in ``bench_models``:
``conv``, ``vit``, ``wrn-16-4``, ``vit-S/16``, ...) compiles SD's kernel function three times —

* ``einsum``: every einsum to ``jnp.einsum`` whole (``_contractor.LAYOUT_OUT = -1``);
* ``laid out, no swap``: laid out by ``pair_product``, the left operand as the path gives it
  (the layouts before the wider-operand-left rule, ``SWAP_ROWS`` infinite);
* ``laid out``: the library as it is

— then calls them in alternating rounds and prints per variant the median and the minimum
wall seconds and CPU seconds (``time.process_time``, all threads: steadier than wall when the
machine is shared), each variant's speed-up against ``einsum`` (medians), and the load average
before and after. It writes nothing; the tables in ``benchmarks/results/structured.md`` are
copied from its output by hand.
"""

from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import ntk_zoo
from benchmarks import bench_models
from ntk_zoo.structured import contractor as _contractor


def _model(name: str, n: int, o: int):
    if name.startswith(("wrn", "vit-")):
        return bench_models.zoo(name, o=o, n=n)
    return getattr(bench_models, name)(o=o, n=n)


def _compile(m, x, layout_out: int, swap: bool):
    saved = _contractor.LAYOUT_OUT, _contractor.SWAP_ROWS
    _contractor.LAYOUT_OUT = layout_out
    if not swap:
        _contractor.SWAP_ROWS = float("inf")  # never swapped: the path's order stays
    try:
        fn = ntk_zoo.ntk_fn(m.f, method="structured_derivatives", trace_axes=(), vmap_axes=0)
        t0 = time.perf_counter()
        compiled = jax.jit(fn).lower(x, None, m.params).compile()
        seconds = time.perf_counter() - t0
    finally:
        _contractor.LAYOUT_OUT, _contractor.SWAP_ROWS = saved
    jax.block_until_ready(compiled(x, None, m.params))
    return compiled, seconds


def main(argv: list[str]) -> None:
    name, n = argv[0], int(argv[1])
    o = int(argv[2]) if len(argv) > 2 else 10
    rounds = int(argv[3]) if len(argv) > 3 else 5
    print("load before", " ".join(os.getloadavg().__repr__().strip("()").split(", ")))
    m = _model(name, n, o)
    x = jnp.asarray(m.x, jnp.float32)
    default = _contractor.LAYOUT_OUT
    variants = {
        "einsum": (-1, True),
        "laid out, no swap": (default, False),
        "laid out": (default, True),
    }
    fns = {}
    for label, (limit, swap) in variants.items():
        fns[label], seconds = _compile(m, x, limit, swap)
        print(f"{label}: compiled in {seconds:.1f} s", flush=True)
    times: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for label, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            jax.block_until_ready(fn(x, None, m.params))
            times[label].append(time.perf_counter() - t0)
            cpu[label].append(time.process_time() - c0)
    base, base_cpu = float(np.median(times["einsum"])), float(np.median(cpu["einsum"]))
    for label, ts in times.items():
        med, med_cpu = float(np.median(ts)), float(np.median(cpu[label]))
        print(
            f"{name} N={n} O={o} {label:18s} wall median {med:.3f} s (min {min(ts):.3f}), "
            f"{base / med:.2f}x einsum; CPU median {med_cpu:.3f} s (min {min(cpu[label]):.3f}), "
            f"{base_cpu / med_cpu:.2f}x einsum; wall {[round(t, 3) for t in ts]}"
        )
    ref = np.asarray(fns["einsum"](x, None, m.params))
    for label, fn in fns.items():
        diff = np.linalg.norm(np.asarray(fn(x, None, m.params)) - ref) / np.linalg.norm(ref)
        print(f"{label}: rel. difference from einsum {diff:.1e}")
    print("load after", " ".join(os.getloadavg().__repr__().strip("()").split(", ")))


if __name__ == "__main__":
    main(sys.argv[1:])
