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


# Held-out models: the cost table was not fitted on them (the grid is `python -m benchmarks
# structured`'s 24 cells); `--held-out` scores auto on them separately from the grid's cells.
HELD_OUT = {
    "wrn-10-2": lambda o, n: bench_models.build("wrn-10-2", o=o, n=n, widths=(32,)),
    "vit-d4-w128": lambda o, n: bench_models.vit(o=o, n=n, dim=128, mlp_dim=256, depth=4),
    "mlp-d8": lambda o, n: bench_models.mlp(o=o, n=n, widths=(64,) + (256,) * 8),
    "t4-loop": lambda o, n: _scanned("transformer", "loop", 4, o, n),
    "t4-scan": lambda o, n: _scanned("transformer", "scan", 4, o, n),
    "mlp8-scan": lambda o, n: _scanned("mlp", "scan", 8, o, n),
}
HELD_OUT_CELLS = [
    ("wrn-10-2", 10, 8, ()),
    ("wrn-10-2", 10, 8, (-1,)),
    ("vit-d4-w128", 10, 16, ()),
    ("vit-d4-w128", 10, 16, (-1,)),
    ("mlp-d8", 10, 16, ()),
    ("mlp-d8", 100, 16, (-1,)),
    ("t4-loop", 10, 16, ()),
    ("t4-scan", 10, 16, ()),
    ("mlp8-scan", 10, 16, ()),
]


def _scanned(model: str, way: str, depth: int, o: int, n: int) -> bench_models.Model:
    """A model of benchmarks/scan.py (a Flax transformer of width 128 on 17 tokens, or a Haiku
    residual MLP of width 256), written ``way`` (``loop`` or ``scan``)."""
    from benchmarks import scan

    size = {"width": 128, "mlp": 256, "heads": 4, "tokens": 17, "n": n, "o": o, "mlp_width": 256}
    f, params, x = (scan.transformer if model == "transformer" else scan.mlp)(way, depth, size)
    params = jax.tree.map(np.asarray, params)
    width = size["width" if model == "transformer" else "mlp_width"]
    desc = f"{model} {depth} ({way}) of width {width}, O={o}, N={n}"
    return bench_models.Model(model, f, params, np.asarray(x), desc)


def _build(name: str, o: int, n: int, widths: tuple) -> bench_models.Model:
    if name in HELD_OUT:
        return HELD_OUT[name](o, n)
    return bench_models.build(name, o=o, n=n, widths=widths)


def _seconds(compiled, args, repeats: int) -> float:
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _case(name, o, n, trace_axes, methods, repeats, widths) -> dict:
    model = _build(name, o, n, widths)
    x = jax.device_put(np.asarray(model.x))
    params = jax.device_put(jax.tree.map(np.asarray, model.params))
    row = {"case": f"{model.description} {trace_axes or 'full'}", "times": {}}
    compiled = {}
    for method in methods:
        kernel_fn = ntk_zoo.ntk_fn(model.f, method=method, trace_axes=trace_axes, vmap_axes=0)
        try:
            compiled[method] = jax.jit(kernel_fn).lower(x, None, params).compile()
            jax.block_until_ready(compiled[method](x, None, params))
        except Exception as e:  # out of memory: reported, the run goes on
            row["times"][method] = f"failed: {type(e).__name__}"
    runs = {m: [] for m in compiled}
    for _ in range(repeats):  # alternating rounds: load hits the methods alike
        for method, program in compiled.items():
            start = time.perf_counter()
            jax.block_until_ready(program(x, None, params))
            runs[method].append(time.perf_counter() - start)
    row["times"].update({m: statistics.median(t) for m, t in runs.items()})
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


def _hit(row: dict, method: str, slack_s: float = 0.0) -> bool | None:
    """Whether ``method`` ran within 10% (+ ``slack_s``) of the fastest method timed."""
    times = {m: t for m, t in row["times"].items() if isinstance(t, float)}
    if method not in times:
        return None
    return times[method] <= 1.10 * min(times.values()) + slack_s


def _score(label: str, rows: list[dict]) -> None:
    est = [_hit(r, r["estimated"]) for r in rows]
    mea = [_hit(r, r["measured"], 0.005) for r in rows]
    count = lambda hits: f"{sum(h is True for h in hits)}/{sum(h is not None for h in hits)}"
    print(
        f"\n{label}: estimated auto within 10% of the fastest in {count(est)} cells; "
        f"measured auto within 10% (+5 ms) in {count(mea)}"
    )


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
    parser.add_argument(
        "--held-out",
        action="store_true",
        help="also the held-out models (not fitted on), scored apart from the grid's cells",
    )
    parser.add_argument(
        "--only-held-out", action="store_true", help="the held-out models only (no calibrate)"
    )
    parser.add_argument("--methods", default="JC,VP,SD", help="methods timed in every cell")
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 3)
    budget_s = args.budget_s or (60.0 if args.quick else 420.0)
    start = time.perf_counter()
    device = jax.devices()[0]
    print(f"# GPU run ({'quick' if args.quick else 'full'})\n")
    print(f"- device: {device.platform}: {device.device_kind}; jax {jax.__version__}")
    print(f"- commit: {os.popen('git rev-parse --short HEAD 2>/dev/null').read().strip()}")
    print(f"- load (1 min): {os.getloadavg()[0]:.2f}; {time.strftime('%Y-%m-%d %H:%M UTC')}\n")
    if args.only_held_out:
        print(f"table: {ntk_zoo.core.active_table().source}\n")
    else:
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
    chosen = tuple(m for m in METHODS if SHORT[m] in args.methods.split(","))
    cases = [(c, chosen, "grid") for c in cells]
    cases += [(c, ("jacobian_contraction", "structured_derivatives"), "zoo") for c in published]
    if args.cells:
        cases = [(_cell(c), chosen, "grid") for c in args.cells.split(",")]
    if args.only_held_out:
        cases = []
    if args.held_out or args.only_held_out:
        slow_vp = lambda c: c[0].startswith("wrn")  # VP: minutes a call on WideResNets
        cases += [
            (c, tuple(m for m in chosen if m != METHODS[1] or not slow_vp(c)), "held-out")
            for c in HELD_OUT_CELLS
        ]
    rows: dict[str, list] = {}
    for (name, o, n, trace_axes), methods, group in cases:
        if time.perf_counter() - start > budget_s:
            print(f"| {name} O={o} N={n} | skipped: past --budget-s |||||||")
            continue
        widths = QUICK_WIDTHS.get(name, ()) if args.quick else ()
        row = _case(name, o, n, trace_axes, methods, repeats, widths)
        rows.setdefault(group, []).append(row)
        cols = []
        for m in METHODS:
            t = row["times"].get(m, "—")
            cols.append(f"{t:.4f}" if isinstance(t, float) else t)
        est, mea = row["estimated"], row["measured"]
        print(
            f"| {row['case']} | {' | '.join(cols)} | {SHORT[est]} ({_ratio(row, est)}) | "
            f"{SHORT[mea]} ({_ratio(row, mea)}) | {row['measure_s']:.2f} |",
            flush=True,
        )
    for group, done in rows.items():
        _score(f"{group} ({len(done)} cells)", done)
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
    print("| auto | wall s | blocks | method | how | block program s (measured) | kept |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    runs = [
        ("estimated", ntk_zoo.AutoOptions(measure=False)),
        ("measured, first run", ntk_zoo.AutoOptions()),
        ("measured, rerun", ntk_zoo.AutoOptions()),
        ("estimated, again", ntk_zoo.AutoOptions(measure=False)),  # the order's own effect
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
            f"{st.method_source} | {times} | {getattr(st, 'measured_blocks', '')} |"
        )


if __name__ == "__main__":
    main()
