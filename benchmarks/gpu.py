"""The GPU run, ready for whenever a GPU is lent: one process, under 8 minutes.

    python -m benchmarks gpu            # on the GPU: writes benchmarks/results/gpu.md
    python -m benchmarks gpu --quick    # tiny sizes on any backend (a CPU check in seconds)

1. ``ntk_zoo.calibrate()`` on this backend (the table ``auto`` then ranks by; not saved).
2. Six grid cells (``mlp``, ``conv``, ``vit`` of ``bench_models`` × O ∈ {8, 100}, full blocks,
   N=16): each method compiled ahead of time and timed (median of ``--repeats`` calls after a
   warm-up), the estimated ``auto`` pick, and the measured ``auto`` pick
   (``AutoOptions(measure=True, wisdom=False)``) with its measuring time.
3. WRN-28-10 (N=8) and ViT-B/16 (N=4) of the zoo, O=10, full blocks: SD and JC timed, both
   ``auto`` picks.

Every case runs in this one process (unlike the harness's one process per case), so peak
memory is not reported; a case that raises (out of memory) is reported as such and the run goes
on. ``--budget-s`` (420 s; 60 s with ``--quick``) stops starting new cases past that many
seconds, so the run stays under 8 minutes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import numpy as np

import ntk_zoo
from benchmarks import bench_models
from benchmarks._harness import SHORT

METHODS = ("jacobian_contraction", "ntk_vector_products", "structured_derivatives")
CELLS = [(m, o, 16, ()) for m in ("mlp", "conv", "vit") for o in (8, 100)]
PUBLISHED = [("wrn-28-10", 10, 8, ()), ("vit-B/16", 10, 4, ())]
QUICK_CELLS = [("mlp", 8, 4, ()), ("conv", 8, 4, ()), ("vit", 8, 4, ())]
QUICK_PUBLISHED = [("wrn-16-1", 10, 2, ())]
QUICK_WIDTHS = {"mlp": (32, 64, 64), "wrn-16-1": (16,)}


def _seconds(compiled, args, repeats: int) -> float:
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _case(name, o, n, trace_axes, methods, repeats, widths) -> dict:
    model = bench_models.build(name, o=o, n=n, widths=widths)
    x = jax.device_put(np.asarray(model.x))
    params = jax.device_put(jax.tree.map(np.asarray, model.params))
    row = {"case": model.description, "times": {}}
    for method in methods:
        kernel_fn = ntk_zoo.ntk_fn(model.f, method=method, trace_axes=trace_axes, vmap_axes=0)
        try:
            compiled = jax.jit(kernel_fn).lower(x, None, params).compile()
            row["times"][method] = _seconds(compiled, (x, None, params), repeats)
        except Exception as e:  # out of memory: reported, the run goes on
            row["times"][method] = f"failed: {type(e).__name__}"
    kernel_fn = ntk_zoo.ntk_fn(model.f, trace_axes=trace_axes, vmap_axes=0)
    row["estimated"] = kernel_fn.choose(x, None, params).method.value
    options = ntk_zoo.AutoOptions(measure=True, wisdom=False, repeats=repeats)
    measured = kernel_fn.replace(auto=options)
    start = time.perf_counter()
    choice = measured.choose(x, None, params)
    row["measure_s"] = time.perf_counter() - start
    row["measured"] = choice.method.value
    return row


def _ratio(row: dict, method: str) -> str:
    times = {m: t for m, t in row["times"].items() if isinstance(t, float)}
    if method not in times or not times:
        return "n/a"
    return f"{times[method] / min(times.values()):.2f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks gpu", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, any backend")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per method")
    parser.add_argument("--budget-s", type=float, default=None, help="start no case after")
    parser.add_argument(
        "--cells",
        default=None,
        help="instead of the default cases: model:O:N:trace,... (trace 'full' or '-1'), e.g. "
        "conv:8:16:full,vit:8:16:-1 (the CPU figures of benchmarks/results/auto.md)",
    )
    parser.add_argument(
        "--whole", default=None, help="model:O:N:block: batched cost of measuring and wisdom"
    )
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 3)
    budget_s = args.budget_s or (60.0 if args.quick else 420.0)
    start = time.perf_counter()
    device = jax.devices()[0]
    print(f"# GPU run ({'quick' if args.quick else 'full'})\n")
    print(f"- device: {device.platform}: {device.device_kind}; jax {jax.__version__}")
    print(f"- commit: {os.popen('git rev-parse --short HEAD 2>/dev/null').read().strip()}")
    print(f"- load (1 min): {os.getloadavg()[0]:.2f}; {time.strftime('%Y-%m-%d %H:%M UTC')}\n")
    table = ntk_zoo.calibrate(budget_s=1.0 if args.quick else 20.0, save=False)
    ntk_zoo.core.use_table(table)
    rates = ", ".join(
        f"{k}={getattr(table, k):.3g}"
        for k in ("matmul_flops", "einsum_flops", "memory_bytes", "overhead_s")
    )
    print(f"calibrated in {time.perf_counter() - start:.1f} s: {rates}\n")
    cells = QUICK_CELLS if args.quick else CELLS
    published = QUICK_PUBLISHED if args.quick else PUBLISHED
    head = "| case | JC s | VP s | SD s | est. auto (× best) | measured auto (× best) | measure s |"
    print(head)
    print("|" + " --- |" * 7)
    cases = [(c, METHODS) for c in cells]
    cases += [(c, ("jacobian_contraction", "structured_derivatives")) for c in published]
    if args.cells:
        cases = [(_cell(c), METHODS) for c in args.cells.split(",")]
    for (name, o, n, trace_axes), methods in cases:
        if time.perf_counter() - start > budget_s:
            print(f"| {name} O={o} N={n} | skipped: past --budget-s |||||||")
            continue
        widths = QUICK_WIDTHS.get(name, ()) if args.quick else ()
        row = _case(name, o, n, trace_axes, methods, repeats, widths)
        cols = []
        for m in METHODS:
            t = row["times"].get(m, "—")
            cols.append(f"{t:.4f}" if isinstance(t, float) else t)
        est, mea = row["estimated"], row["measured"]
        print(
            f"| {row['case']} | {' | '.join(cols)} | {SHORT[est]} ({_ratio(row, est)}) | "
            f"{SHORT[mea]} ({_ratio(row, mea)}) | {row['measure_s']:.2f} |"
        )
    if args.whole:
        _whole(*args.whole.split(":"))
    print(f"\nwhole run: {time.perf_counter() - start:.0f} s")


def _cell(text: str) -> tuple:
    name, o, n, trace = text.split(":")
    return name, int(o), int(n), () if trace == "full" else (int(trace),)


def _whole(name: str, o: str, n: str, block: str) -> None:
    """One ``batched`` kernel three ways: estimated auto, measured auto on a first run (empty
    wisdom), and measured auto on a rerun (wisdom read back); wall seconds of each call."""
    import tempfile

    model = bench_models.build(name, o=int(o), n=int(n))
    x, params = np.asarray(model.x), jax.tree.map(np.asarray, model.params)
    os.environ["NTK_ZOO_CACHE_DIR"] = tempfile.mkdtemp(prefix="ntk_zoo-wisdom-")
    print(f"\n{model.description}, blocks of {block} (full kernel, trace_axes=(-1,)):\n")
    print("| auto | wall s | blocks | method | how | block program s (measured) |")
    print("| --- | --- | --- | --- | --- | --- |")
    runs = [
        ("estimated", ntk_zoo.AutoOptions(measure=False)),
        ("measured, first run", ntk_zoo.AutoOptions()),
        ("measured, rerun", ntk_zoo.AutoOptions()),
    ]
    for label, options in runs:
        kernel_fn = ntk_zoo.ntk_fn(model.f, vmap_axes=0, auto=options)
        run = ntk_zoo.batched(kernel_fn, batch_size=int(block), progress=False)
        start = time.perf_counter()
        jax.block_until_ready(run(x, None, params))
        wall = time.perf_counter() - start
        st = run.stats
        times = ", ".join(f"{SHORT[m]} {t:.3f}" for m, t in st.method_times.items())
        print(
            f"| {label} | {wall:.2f} | {st.computed} | {SHORT[st.method]} | "
            f"{st.method_source} | {times} |"
        )


if __name__ == "__main__":
    main()
