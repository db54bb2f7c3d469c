"""Times every NTK method side by side on a few models; prints a markdown table of ratios.

    .venv/bin/python benchmarks/methods.py [--quick]

float32, vmap_axes=0, each kernel function jitted; "compile" is the first call minus a steady
call, "steady" the median of repeated calls. Methods alternate within each repeat so that machine
noise hits all of them alike. Ratios are each method's steady time over the fastest one's;
``auto`` shows the method it picked and its ratio to the fastest.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import ntk_zoo
from architectures.jax import mlp

METHODS = ["jacobian_contraction", "ntk_vector_products", "structured_derivatives"]


def conv_net(params, x):
    dn = ("NHWC", "HWIO", "NHWC")
    h = jax.nn.relu(lax.conv_general_dilated(x, params["c1"], (1, 1), "SAME", dimension_numbers=dn))
    h = jax.nn.relu(lax.conv_general_dilated(h, params["c2"], (2, 2), "SAME", dimension_numbers=dn))
    return h.mean((1, 2)) @ params["head"]


def cases(quick: bool):
    k = jax.random.split(jax.random.key(0), 6)
    n = 16 if quick else 64
    width = 128 if quick else 512
    p = mlp.init(k[0], 64, [width, width], 10)
    x = jax.random.normal(k[1], (n, 64))
    yield f"MLP 64-{width}-{width}-10, n={n}", mlp.apply, p, x
    c = 16 if quick else 32
    p = {
        "c1": jax.random.normal(k[2], (3, 3, 3, c)) / 3,
        "c2": jax.random.normal(k[3], (3, 3, c, c)) / (3 * c**0.5),
        "head": jax.random.normal(k[4], (c, 10)) / c**0.5,
    }
    x = jax.random.normal(k[5], (n // 2, 16, 16, 3))
    yield f"ConvNet 2x conv{c} 16x16, n={n // 2}", conv_net, p, x


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {jax.device_count()} "
        f"{jax.default_backend()} device(s); jax {jax.__version__}, numpy {np.__version__}\n"
    )
    print("| model | trace_axes | method | compile s | steady ms | / fastest |")
    print("|---|---|---|---|---|---|")
    for name, f, params, x in cases(args.quick):
        for trace_axes in ((-1,), ()):
            fns = {
                m: jax.jit(ntk_zoo.ntk_fn(f, method=m, trace_axes=trace_axes, vmap_axes=0))
                for m in METHODS
            }
            first = {}
            for m, fn in fns.items():
                start = time.perf_counter()
                jax.block_until_ready(fn(x, None, params))
                first[m] = time.perf_counter() - start
            runs = {m: [] for m in fns}
            for _ in range(args.repeats):
                for m, fn in fns.items():
                    start = time.perf_counter()
                    jax.block_until_ready(fn(x, None, params))
                    runs[m].append(time.perf_counter() - start)
            steady = {m: statistics.median(r) for m, r in runs.items()}
            best = min(steady.values())
            chosen, _ = ntk_zoo.ntk_fn(f, trace_axes=trace_axes, vmap_axes=0).choose(
                x, None, params
            )
            for m in METHODS:
                print(
                    f"| {name} | {trace_axes} | {m} | {first[m] - steady[m]:.2f} | "
                    f"{steady[m] * 1e3:.1f} | {steady[m] / best:.2f} |"
                )
            print(
                f"| {name} | {trace_axes} | auto -> {chosen} | | | "
                f"{steady[str(chosen)] / best:.2f} |"
            )


if __name__ == "__main__":
    jnp.zeros(())  # initialise the backend before timing
    main()
