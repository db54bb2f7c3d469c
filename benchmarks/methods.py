"""Every NTK method side by side on a small MLP and a small ConvNet; ratios to the fastest.

    python -m benchmarks methods [--quick] [--repeats 5]

float32, ``vmap_axes=0``, each kernel function jitted, one fresh process per method
(benchmarks/_harness.py): "compile" is the ahead-of-time compile plus the first call minus a
steady call, "steady" the median of repeated calls, the methods alternating within each round so
that machine noise hits all of them alike. Ratios are each method's steady time over the fastest
one's; ``auto`` shows the method it picked and its ratio to the fastest.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile

from benchmarks import _harness

METHODS = ("jacobian_contraction", "ntk_vector_products", "structured_derivatives")


def cases(quick: bool):
    """``(name, model, o, n, widths)`` of each model."""
    n = 16 if quick else 64
    width = 128 if quick else 512
    yield f"MLP 64-{width}-{width}-10, n={n}", "mlp", 10, n, (64, width, width)
    c = 16 if quick else 32
    yield f"ConvNet 2x conv{c} 16x16, n={n // 2}", "convnet", 10, n // 2, (c,)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mem-limit-gib", type=float, default=14.0)
    args = parser.parse_args(argv)
    repeats = 2 if args.quick else args.repeats
    _harness.set_mem_limit(args.mem_limit_gib)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"{_harness.python_info()}; one process per method\n"
    )
    print("| model | trace_axes | method | compile s | steady ms | / fastest | peak MiB |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as kdir:
        for name, model, o, n, widths in cases(args.quick):
            for trace_axes in ((-1,), ()):
                specs = {m: (_harness.OURS_PYTHON, "ours", m) for m in (*METHODS, "auto")}
                res = _harness.run_group(
                    specs, model, o, n, trace_axes, repeats, args.mem_limit_gib, kdir, widths
                )
                steady = {m: res[m].get("steady_s") for m in METHODS}
                timed = [t for t in steady.values() if t is not None]
                best = min(timed) if timed else None
                for m in METHODS:
                    r = res[m]
                    t = steady[m]
                    print(
                        f"| {name} | {trace_axes} | {m} | {_harness.fmt(r.get('compile_s'), '.2f')}"
                        f" | {_harness.fmt(None if t is None else t * 1e3, '.1f')} | "
                        f"{_harness.ratio(t, best).rstrip('×')} | "
                        f"{_harness.fmt(r.get('peak_rss_mib'), '.0f')} {r['note']} |",
                        flush=True,
                    )
                chosen = res["auto"].get("chosen")
                print(
                    f"| {name} | {trace_axes} | auto -> {chosen} | | | "
                    f"{_harness.ratio(steady.get(chosen), best).rstrip('×')} | |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
