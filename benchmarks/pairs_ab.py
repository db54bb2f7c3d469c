"""Structured derivatives with and without the example pairs, A/B in one process (issue 20).

``python -m benchmarks.pairs_ab MODEL O N [WIDTH] [full|traced] [ROUNDS]`` (``MODEL`` as in
``bench_models``: ``wrn-28-10`` with ``WIDTH`` 32, ``vit-B/16`` with 224, ``wrn-16-4``, ``conv``
with ``WIDTH`` 0, ...; ``x2=None``, float32, jitted) compiles SD's kernel function twice —

* ``whole``: every einsum over all example pairs (``_contractor.PAIRS_MIN_S`` infinite);
* ``pairs``: the library as it is (a use paired with itself on the pairs ``n ≤ n'`` where its
  einsum is estimated at ``PAIRS_MIN_S`` or more and the pairs save ``PAIRS_MIN_SAVING``)

— prints XLA's cost analysis of each and the largest relative difference of the kernels, then
calls them in alternating rounds (the order reversed every other round) and prints the median
wall and CPU seconds (``time.process_time``, all threads: steadier than wall when the machine is
shared) and the speed-up of ``pairs``. It writes nothing; the tables in
``benchmarks/results/published-sizes.md`` are copied from its output by hand.
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import ntk_zoo
from benchmarks import bench_models
from ntk_zoo.structured import contractor as _contractor


def main(argv: list[str]) -> None:
    name, o, n = argv[0], int(argv[1]), int(argv[2])
    width = int(argv[3]) if len(argv) > 3 else 0
    trace_axes = () if (argv[4] if len(argv) > 4 else "full") == "full" else (-1,)
    rounds = int(argv[5]) if len(argv) > 5 else 4
    m = bench_models.build(name, o=o, n=n, widths=(width,) if width else ())
    params = jax.tree_util.tree_map(jnp.asarray, m.params)
    x = jnp.asarray(m.x)
    default = _contractor.PAIRS_MIN_S
    compiled = {}
    try:
        for key, bound in (("whole", float("inf")), ("pairs", default)):
            _contractor.PAIRS_MIN_S = bound
            fn = ntk_zoo.ntk_fn(
                m.f, method="structured_derivatives", trace_axes=trace_axes, vmap_axes=0
            )
            compiled[key] = jax.jit(fn).lower(x, None, params).compile()
            cost = compiled[key].cost_analysis()
            cost = cost[0] if isinstance(cost, (list, tuple)) else cost
            print(
                f"{key}: {cost['flops'] / 1e9:.1f} GFLOP, "
                f"{cost.get('bytes accessed', 0) / 1e9:.2f} GB (XLA)"
            )
    finally:
        _contractor.PAIRS_MIN_S = default
    k = {key: c(x, None, params) for key, c in compiled.items()}
    diff = jnp.max(jnp.abs(k["whole"] - k["pairs"])) / jnp.max(jnp.abs(k["whole"]))
    print(f"largest difference, relative: {float(diff):.1e}")
    wall = {key: [] for key in compiled}
    cpu = {key: [] for key in compiled}
    load = lambda: " ".join(open("/proc/loadavg").read().split()[:3])
    print(f"load before: {load()}")
    for r in range(rounds):
        order = list(compiled.items())
        for key, c in order if r % 2 == 0 else order[::-1]:
            start, start_cpu = time.perf_counter(), time.process_time()
            c(x, None, params).block_until_ready()
            wall[key].append(time.perf_counter() - start)
            cpu[key].append(time.process_time() - start_cpu)
    med = lambda xs: float(np.median(xs))
    w0, w1 = med(wall["whole"]), med(wall["pairs"])
    c0, c1 = med(cpu["whole"]), med(cpu["pairs"])
    print(
        f"{m.description}, {'full' if trace_axes == () else 'traced'}, {rounds} rounds: "
        f"wall whole {w0:.3f} s, pairs {w1:.3f} s ({w0 / w1:.2f}x); "
        f"CPU whole {c0:.3f} s, pairs {c1:.3f} s ({c0 / c1:.2f}x); load after: {load()}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
