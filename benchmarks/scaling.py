"""How each method's time scales with MLP width and with the number of outputs O; log-log plot.

    .venv/bin/python benchmarks/scaling.py [--quick] [--repeats 3] [--out benchmarks/scaling.png]

MLP of depth L=3 with square hidden layers, ``W -> W -> W -> W -> O`` (input width W too, so every
dense layer but the head is W×W), ReLU, NTK parameterisation, float32, ``vmap_axes=0``,
``trace_axes=()`` (full O×O blocks), jitted; steady = median of ``--repeats`` calls, methods
alternating. Two sweeps:

* width W ∈ 64…2048 at N=4, O=8;
* outputs O ∈ 1…256 at W=256, N=4.

The least-squares slope of log(time) on log(W) or log(O) over the upper half of each sweep (the
asymptotic regime; slopes over the whole sweep are printed too) is set beside the exponent
DESIGN.md §2 predicts. Per dense layer ``y = x·w`` (w: W×W) and with N, L fixed:

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
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_models
import jax
import jax.numpy as jnp
import numpy as np

import ntk_zoo

METHODS = ("jacobian_contraction", "ntk_vector_products", "structured_derivatives")
SHORT = {"jacobian_contraction": "JC", "ntk_vector_products": "VP", "structured_derivatives": "SD"}
EXPECTED = {
    ("width", "jacobian_contraction"): "2",
    ("width", "ntk_vector_products"): "2",
    ("width", "structured_derivatives"): "1 (W ≲ N·O) → 2",
    ("O", "jacobian_contraction"): "1 → 2",
    ("O", "ntk_vector_products"): "1",
    ("O", "structured_derivatives"): "1 (N·O ≲ W) → 2",
}


def kernel_fns(trace_axes) -> dict:
    fns = {}
    for m in METHODS:
        try:
            fns[m] = jax.jit(ntk_zoo.ntk_fn(bench_models.mlp_apply, method=m, **trace_axes))
        except NotImplementedError:
            fns[m] = None
    return fns


def time_point(widths, n: int, repeats: int) -> dict:
    """Steady seconds per method (None: not available) for one MLP shape, methods alternating."""
    params = jax.tree_util.tree_map(jnp.asarray, bench_models.mlp_params(widths, seed=0))
    x = jnp.asarray(np.random.default_rng(1).standard_normal((n, widths[0])), jnp.float32)
    fns = kernel_fns({"trace_axes": (), "vmap_axes": 0})
    live = {m: fn for m, fn in fns.items() if fn is not None}
    for fn in live.values():
        jax.block_until_ready(fn(x, None, params))
    runs: dict = {m: [] for m in live}
    for _ in range(repeats):
        for m, fn in live.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(x, None, params))
            runs[m].append(time.perf_counter() - start)
    return {m: statistics.median(runs[m]) if m in runs else None for m in METHODS}


def slope(xs, ts) -> float | None:
    pts = [(x, t) for x, t in zip(xs, ts) if t is not None]
    if len(pts) < 2:
        return None
    lx, lt = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(lx, lt, 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, smaller points; 2 repeats")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "scaling.png"))
    args = parser.parse_args()
    repeats = 2 if args.quick else args.repeats
    n, depth = 4, 3
    widths = [64, 128, 256, 512] if args.quick else [64, 128, 256, 512, 1024, 2048]
    outs = [1, 4, 16, 64] if args.quick else [1, 2, 4, 8, 16, 32, 64, 128, 256]
    w_fixed, o_fixed = 256, 8
    print(
        f"jax {jax.__version__}, {jax.default_backend()}, {os.cpu_count()} CPUs; "
        f"MLP depth {depth}, N={n}, trace_axes=(), float32, median of {repeats}\n"
    )

    sweeps = {}
    print(f"| sweep | value | {' | '.join(SHORT[m] + ' s' for m in METHODS)} |")
    print("|---|---|" + "---|" * len(METHODS))
    for name, values, shape in (
        ("width", widths, lambda w: [w] * (depth + 1) + [o_fixed]),
        ("O", outs, lambda o: [w_fixed] * (depth + 1) + [o]),
    ):
        rows = []
        for v in values:
            t = time_point(shape(v), n, repeats)
            rows.append(t)
            cells = " | ".join("n/a" if t[m] is None else f"{t[m]:.4f}" for m in METHODS)
            print(f"| {name} | {v} | {cells} |", flush=True)
        sweeps[name] = (values, rows)

    print("\nFitted log-log slopes (time ∝ value^slope) beside DESIGN.md §2's expectations")
    print("| sweep | method | slope, upper half | slope, all points | expected |")
    print("|---|---|---|---|---|")
    fits = {}
    for name, (values, rows) in sweeps.items():
        half = len(values) // 2
        for m in METHODS:
            ts = [r[m] for r in rows]
            if all(t is None for t in ts):
                print(f"| {name} | {SHORT[m]} | n/a (not available) | | {EXPECTED[name, m]} |")
                continue
            hi, full = slope(values[half:], ts[half:]), slope(values, ts)
            fits[name, m] = hi
            print(
                f"| {name} | {SHORT[m]} | {hi:.2f} | {full:.2f} | {EXPECTED[name, m]} |",
                flush=True,
            )
    plot(sweeps, fits, args.out, n, o_fixed, w_fixed)
    print(f"\nwrote {args.out}")


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
