"""Where structured derivatives' time goes against the FLOP floor (issue 20, published sizes).

``python -m benchmarks.floor_split MODEL N [WIDTH] [ROUNDS]`` (``MODEL`` as in ``bench_models``:
``wrn-28-10`` with ``WIDTH`` 32, ``vit-B/16`` with ``WIDTH`` 224; O = 10 logits, full blocks,
``x2=None``, float32, jitted) compiles three programs in one process —

* ``fwd``: the forward pass on the batch (the floor's FLOPs are its XLA count × (1 + O));
* ``floor program``: that forward pass and O input-cotangent passes (``vmap`` of ``jax.vjp``'s
  pullback over the O one-hot output cotangents, with respect to ``x`` only): the arithmetic the
  floor counts, as XLA runs it — SD's own forward and cotangent passes do this much;
* ``SD``: ``ntk_fn(..., method="structured_derivatives")``;

plus a 2048² float32 matmul (the floor's rate). It prints XLA's cost analysis of each (FLOPs,
bytes), SD's ``dot`` and ``convolution`` FLOPs grouped by shape (from the optimised HLO: the
convolutions are the passes, the dots SD's contraction), then calls the programs in
alternating rounds and prints per program the median wall and CPU seconds
(``time.process_time``, all threads: steadier than wall when the machine is shared), its
GFLOP/s against the matmul's, and "of floor" (floor FLOPs at the matmul rate / the program's
seconds), in wall and in CPU terms. Last, the bound: the floor's FLOPs / SD's FLOPs, the
fraction of the floor SD would reach if every op ran at the matmul rate. It writes nothing; the
tables in ``benchmarks/results/published-sizes.md`` are copied from its output by hand.
"""

from __future__ import annotations

import collections
import math
import re
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import ntk_zoo
from benchmarks import bench_models

LOGITS = 10
_DEF = re.compile(r"\s*(?:ROOT )?%?([\w.\-]+) = \w+\[([\d,]*)\]")
_OP = re.compile(r"\s*(?:ROOT )?%?[\w.\-]+ = \w+\[([\d,]*)\]\S* (dot|convolution)\(([^)]*)\)")


def _dims(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def hlo_flops(text: str) -> list[tuple[str, int, str]]:
    """``(kind, FLOPs, shapes)`` of every ``dot`` and ``convolution`` in optimised HLO text
    (2 × output elements × contracted size; a convolution's window counted whole, padding and
    dilation zeros included, unlike XLA's cost analysis)."""
    shapes = {m.group(1): _dims(m.group(2)) for m in map(_DEF.match, text.splitlines()) if m}
    out = []
    for line in text.splitlines():
        m = _OP.match(line)
        if not m:
            continue
        result, kind = _dims(m.group(1)), m.group(2)
        try:
            operands = [shapes[a.strip().lstrip("%")] for a in m.group(3).split(",")]
        except KeyError:
            continue
        if kind == "dot":
            dims = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", line)
            k = math.prod(operands[0][i] for i in _dims(dims.group(1))) if dims else 1
        else:
            labels = re.search(r"dim_labels=\w+_(\w+)->", line)
            kernel = operands[1]
            k = math.prod(kernel) // kernel[labels.group(1).index("o")] if labels else 0
        out.append((kind, 2 * math.prod(result) * k, f"{result} <- {operands}"))
    return out


def _cost(compiled) -> dict:
    cost = compiled.cost_analysis()
    return cost[0] if isinstance(cost, (list, tuple)) else cost


def main(argv: list[str]) -> None:
    name, n = argv[0], int(argv[1])
    width = int(argv[2]) if len(argv) > 2 else 32
    rounds = int(argv[3]) if len(argv) > 3 else 3
    m = bench_models.build(name, o=LOGITS, n=n, widths=(width,))
    params = jax.tree_util.tree_map(jnp.asarray, m.params)
    x = jnp.asarray(m.x)

    def floor_program(x, params):
        y, pull = jax.vjp(lambda x: m.f(params, x), x)
        cts = jnp.broadcast_to(jnp.eye(LOGITS, dtype=y.dtype)[:, None, :], (LOGITS, *y.shape))
        return y, jax.vmap(pull)(cts)[0]

    sd = ntk_zoo.ntk_fn(m.f, method="structured_derivatives", trace_axes=(), vmap_axes=0)
    a = jnp.ones((2048, 2048), jnp.float32)
    programs = {
        "fwd": (jax.jit(lambda x, p: m.f(p, x)), (x, params)),
        "floor program": (jax.jit(floor_program), (x, params)),
        "SD": (jax.jit(sd), (x, None, params)),
        "matmul 2048²": (jax.jit(lambda a: a @ a), (a,)),
    }
    compiled, gflop = {}, {}
    print(f"{m.description}; N={n}, O={LOGITS}, full blocks, x2=None, float32")
    print("\n| program | GFLOP (XLA) | GB accessed (XLA) |\n|---|---|---|")
    for key, (fn, args) in programs.items():
        compiled[key] = fn.lower(*args).compile()
        cost = _cost(compiled[key])
        gflop[key] = cost["flops"] / 1e9
        print(f"| {key} | {gflop[key]:.1f} | {cost.get('bytes accessed', 0) / 1e9:.2f} |")
        jax.block_until_ready(compiled[key](*args))
    floor = gflop["fwd"] * (1 + LOGITS)
    ratio = gflop["SD"] / floor
    print(f"\nfloor FLOPs (1 + O) × fwd = {floor:.1f} GFLOP; SD / floor = {ratio:.2f}")

    groups: dict = collections.defaultdict(lambda: [0, 0])
    totals: collections.Counter = collections.Counter()
    for kind, flops, shapes in hlo_flops(compiled["SD"].as_text()):
        groups[kind, shapes][0] += flops
        groups[kind, shapes][1] += 1
        totals[kind] += flops
    print("\nSD's dots and convolutions by shape (HLO count, windows whole):")
    print(", ".join(f"{k} {v / 1e9:.1f} GFLOP" for k, v in totals.items()))
    print("\n| GFLOP | count | op | result <- operands |\n|---|---|---|---|")
    for (kind, shapes), (flops, count) in sorted(groups.items(), key=lambda kv: -kv[1][0])[:16]:
        print(f"| {flops / 1e9:.1f} | {count} | {kind} | {shapes} |")

    wall = {k: [] for k in programs}
    cpu = {k: [] for k in programs}
    for r in range(rounds):  # each round in the other order (reversed on odd rounds)
        for key, (_, args) in list(programs.items())[:: -1 if r % 2 else 1]:
            reps = 5 if key.startswith("matmul") else 1
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(reps):
                jax.block_until_ready(compiled[key](*args))
            wall[key].append((time.perf_counter() - start) / reps)
            cpu[key].append((time.process_time() - start_cpu) / reps)
    mm = "matmul 2048²"
    rate_wall, rate_cpu = gflop[mm] / min(wall[mm]), gflop[mm] / min(cpu[mm])
    print(
        f"\n{rounds} alternating rounds; matmul rate (best) {rate_wall:.0f} GFLOP/s wall, "
        f"{rate_cpu:.0f} GFLOP per CPU-s; load {' '.join(open('/proc/loadavg').read().split()[:3])}"
    )
    print(
        "\n| program | wall s | CPU s | GFLOP/s wall (of matmul) | GFLOP per CPU-s (of matmul) "
        "| of floor, wall | of floor, CPU |\n|---|---|---|---|---|---|---|"
    )
    for key in ("floor program", "SD"):
        w, c = float(np.median(wall[key])), float(np.median(cpu[key]))
        rate = gflop[key] / w
        print(
            f"| {key} | {w:.2f} | {c:.2f} | {rate:.0f} ({rate / rate_wall:.2f}) "
            f"| {gflop[key] / c:.0f} ({gflop[key] / c / rate_cpu:.2f}) "
            f"| {floor / rate_wall / w:.2f} | {floor / rate_cpu / c:.2f} |"
        )
    extra = gflop["SD"] - gflop["floor program"]
    extra_cpu = float(np.median(cpu["SD"]) - np.median(cpu["floor program"]))
    print(
        f"\nSD − floor program (its contraction): {extra:.1f} GFLOP in {extra_cpu:.2f} CPU-s, "
        f"{extra / extra_cpu:.0f} GFLOP per CPU-s ({extra / extra_cpu / rate_cpu:.2f} of matmul)"
    )
    print(f"bound (every op at the matmul rate): floor / SD FLOPs = {floor / gflop['SD']:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
