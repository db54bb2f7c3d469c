"""How each method's time scales with MLP width and with the number of outputs O; log-log plot.

    python -m benchmarks scaling [--quick] [--repeats 3] [--out benchmarks/results/scaling.png]

MLP of depth L=3 with square hidden layers, ``W -> W -> W -> W -> O`` (input width W too, so every
dense layer but the head is W×W), ReLU, NTK parameterisation, float32, ``vmap_axes=0``,
``trace_axes=()`` (full O×O blocks), jitted, one fresh process per method and point
(benchmarks/_harness.py); steady = median of ``--repeats`` calls, methods alternating. Two
sweeps:

* width W ∈ 64…2048 at N=4, O=8;
* outputs O ∈ 1…256 at W=256, N=4.

The least-squares slope of log(time) on log(W) or log(O) over the upper half of each sweep (the
asymptotic regime; slopes over the whole sweep are printed too) is set beside the exponent that
each method's cost (the formulas of ``ntk_zoo.Method``, repeated in BENCHMARKS.md) predicts.
Per dense layer ``y = x·w`` (w: W×W) and with N, L fixed:

* JC: the Jacobians cost N·O·[FP] ∝ N·O·W² and the contraction N²·O²·P ∝ N²·O²·W²: slope 2 in
  W; in O, 1 for the Jacobians and 2 for the contraction, which dominates once N·O ≳ 3: → 2.
* VP: N²·O·[FP] ∝ N²·O·W²: slope 2 in W, 1 in O.
* SD: the df/dy pass costs N·O·[FP] ∝ N·O·W² and the contraction
  ``(x1·x2)·(g1·g2)`` N²·(W + O²·W) ∝ N²·O²·W — the factor of W that SD saves is in the
  contraction only. In W: 1 while the contraction dominates (W ≲ N·O), 2 beyond, where SD and JC
  differ by a constant factor (≈ N·O, the contraction's share in JC). In O: 1 while
  N·O ≲ W (the df/dy pass dominates), 2 beyond; with N=4, W=256 the crossing is near O=64.

Below a few milliseconds, fixed per-call overheads flatten every slope.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

from benchmarks import _harness
from benchmarks._harness import SHORT, fmt

METHODS = ("jacobian_contraction", "ntk_vector_products", "structured_derivatives")
EXPECTED = {
    ("width", "jacobian_contraction"): "2",
    ("width", "ntk_vector_products"): "2",
    ("width", "structured_derivatives"): "1 (W ≲ N·O) → 2",
    ("O", "jacobian_contraction"): "1 → 2",
    ("O", "ntk_vector_products"): "1",
    ("O", "structured_derivatives"): "1 (N·O ≲ W) → 2",
}


def time_point(widths, o: int, n: int, repeats: int, limit_gib: float) -> dict:
    """Steady seconds per method (None: failed or skipped) for one MLP ``widths -> o``."""
    specs = {m: (_harness.OURS_PYTHON, "ours", m) for m in METHODS}
    with tempfile.TemporaryDirectory() as kdir:
        res = _harness.run_group(specs, "mlp", o, n, (), repeats, limit_gib, kdir, tuple(widths))
    return {m: res[m].get("steady_s") for m in METHODS}


def slope(xs, ts) -> float | None:
    pts = [(x, t) for x, t in zip(xs, ts) if t is not None]
    if len(pts) < 2:
        return None
    lx, lt = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(lx, lt, 1)[0])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, smaller points; 2 repeats")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="the plot (default benchmarks/results/scaling[-quick].png)")
    parser.add_argument("--mem-limit-gib", type=float, default=14.0)
    args = parser.parse_args(argv)
    repeats = 2 if args.quick else args.repeats
    name = "scaling-quick.png" if args.quick else "scaling.png"
    out = args.out or os.path.join(_harness.RESULTS, name)
    _harness.set_mem_limit(args.mem_limit_gib)
    n, depth = 4, 3
    widths = [64, 128] if args.quick else [64, 128, 256, 512, 1024, 2048]
    outs = [1, 4] if args.quick else [1, 2, 4, 8, 16, 32, 64, 128, 256]
    w_fixed, o_fixed = 256, 8
    print(
        f"{_harness.python_info()}, {os.cpu_count()} CPUs; "
        f"MLP depth {depth}, N={n}, trace_axes=(), float32, median of {repeats}\n"
    )

    sweeps = {}
    print(f"| sweep | value | {' | '.join(SHORT[m] + ' s' for m in METHODS)} |")
    print("|---|---|" + "---|" * len(METHODS))
    for sweep, values, shape in (
        ("width", widths, lambda w: ([w] * (depth + 1), o_fixed)),
        ("O", outs, lambda o: ([w_fixed] * (depth + 1), o)),
    ):
        rows = []
        for v in values:
            t = time_point(*shape(v), n, repeats, args.mem_limit_gib)
            rows.append(t)
            cells = " | ".join("n/a" if t[m] is None else f"{t[m]:.4f}" for m in METHODS)
            print(f"| {sweep} | {v} | {cells} |", flush=True)
        sweeps[sweep] = (values, rows)

    print("\nFitted log-log slopes (time ∝ value^slope) beside the costs' expectations")
    print("| sweep | method | slope, upper half | slope, all points | expected |")
    print("|---|---|---|---|---|")
    fits = {}
    for name, (values, rows) in sweeps.items():
        half = len(values) // 2
        for m in METHODS:
            ts = [r[m] for r in rows]
            if all(t is None for t in ts):
                print(f"| {name} | {SHORT[m]} | n/a (no time) | | {EXPECTED[name, m]} |")
                continue
            hi, full = slope(values[half:], ts[half:]), slope(values, ts)
            fits[name, m] = hi
            hi_s, full_s = fmt(hi, ".2f") or "n/a", fmt(full, ".2f") or "n/a"
            print(f"| {name} | {SHORT[m]} | {hi_s} | {full_s} | {EXPECTED[name, m]} |", flush=True)
    plot(sweeps, fits, out, n, o_fixed, w_fixed)
    print(f"\nwrote {os.path.relpath(out, _harness.ROOT)}")


def plot(sweeps, fits, path, n, o_fixed, w_fixed) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    titles = {
        "width": f"time vs MLP width W (N={n}, O={o_fixed})",
        "O": f"time vs outputs O (N={n}, W={w_fixed})",
    }
    for ax, (name, (values, rows)) in zip(axes, sweeps.items()):
        for m, marker in zip(METHODS, "osD"):
            ts = [r[m] for r in rows]
            pts = [(v, t) for v, t in zip(values, ts) if t is not None]
            if not pts:
                continue
            label = SHORT[m]
            if fits.get((name, m)) is not None:
                label += f" (slope {fits[name, m]:.2f})"
            ax.loglog(*zip(*pts), marker=marker, label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("W" if name == "width" else "O")
        ax.set_ylabel("steady time per kernel (s)")
        ax.set_title(titles[name])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
