"""Structured derivatives on a layer stack written with ``lax.scan`` against the same stack
unrolled (a Python loop over per-layer params): steady time and compile time, side by side.

    python -m benchmarks.scan_engine [--quick] [--depths 6,12] [--rounds 5] [--compile-rounds 3]

Both models have the same parameters (the scanned one stacks them along a leading layer axis)
and give the same kernel; each is jitted with ``vmap_axes=0`` and full logit blocks
(``trace_axes=()``). Compile time is ``trace().lower().compile()``; steady time is the median over
alternating rounds (one call of each model per round, so load hits both alike). Also times
Jacobian contraction on each, for the SD/JC ratio. The compile time is also split into its
phases: tracing the kernel function (``jit(...).trace``), lowering, and XLA's compile.

Before any timed compile, a small scanned and unrolled stack are compiled once: the first
compile of a process pays a one-time start-up (0.2-0.3 s on the 2-core CPU) that would
otherwise land on whichever case is compiled first. ``--compile-rounds N`` compiles each case
``N`` times, the scanned and unrolled ones in alternating order, and reports the medians;
``XLA CPU s`` is the process CPU time of XLA's compile (less sensitive to other processes'
load than its wall time).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import ntk_zoo


def _mlp_layer(h, p):
    return h + jnp.tanh(h @ p["w"] / np.sqrt(h.shape[-1]) + p["b"])


def _layer_norm(h):
    mu = h.mean(-1, keepdims=True)
    return (h - mu) * lax.rsqrt(((h - mu) ** 2).mean(-1, keepdims=True) + 1e-6)


def _block(h, p):
    """A pre-LN transformer block (one head) on ``h: (n, tokens, width)``."""
    width = h.shape[-1]
    a = _layer_norm(h) * p["g1"]
    q, k, v = (a @ p[n] / np.sqrt(width) for n in ("q", "k", "v"))
    att = jax.nn.softmax(q @ jnp.swapaxes(k, -1, -2) / np.sqrt(width), axis=-1)
    h = h + (att @ v) @ p["o"] / np.sqrt(width)
    m = _layer_norm(h) * p["g2"]
    return h + jax.nn.gelu(m @ p["m1"] / np.sqrt(width)) @ p["m2"] / np.sqrt(p["m2"].shape[0])


def _stacked_params(kind: str, depth: int, width: int, rng) -> dict:
    n = lambda *s: jnp.asarray(rng.standard_normal((depth, *s)), jnp.float32)
    if kind == "mlp":
        return {"w": n(width, width), "b": n(width) * 0.1}
    return {
        "g1": 1 + 0.1 * n(width),
        "q": n(width, width),
        "k": n(width, width),
        "v": n(width, width),
        "o": n(width, width),
        "g2": 1 + 0.1 * n(width),
        "m1": n(width, 2 * width),
        "m2": n(2 * width, width),
    }


def models(kind: str, depth: int, width: int, outputs: int, seed: int = 0):
    """``(scanned f, scanned params, unrolled f, unrolled params)`` of one stack."""
    rng = np.random.default_rng(seed)
    layer = _mlp_layer if kind == "mlp" else _block
    stacked = _stacked_params(kind, depth, width, rng)
    head = jnp.asarray(rng.standard_normal((width, outputs)) / np.sqrt(width), jnp.float32)

    def readout(h):
        return (h if kind == "mlp" else h.mean(-2)) @ head

    def scanned(p, x):
        h, _ = lax.scan(lambda h, q: (layer(h, q), None), x, p)
        return readout(h)

    def unrolled(p, x):
        h = x
        for q in p:
            h = layer(h, q)
        return readout(h)

    per_layer = [jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(depth)]
    return scanned, stacked, unrolled, per_layer


def _inputs(kind: str, n: int, width: int, tokens: int):
    rng = np.random.default_rng(1)
    shape = (n, width) if kind == "mlp" else (n, tokens, width)
    return jnp.asarray(rng.standard_normal(shape), jnp.float32)


def _compiled(f, params, x, method: str):
    """The compiled kernel function and the seconds of its trace, lower and XLA compile (wall),
    and the process CPU seconds of the XLA compile."""
    kernel_fn = ntk_zoo.ntk_fn(f, method=method, vmap_axes=0, trace_axes=())
    t0 = time.perf_counter()
    traced = jax.jit(kernel_fn).trace(x, None, params)
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    c2 = time.process_time()
    compiled = lowered.compile()
    cpu = time.process_time() - c2
    return compiled, (t1 - t0, t2 - t1, time.perf_counter() - t2, cpu)


def warm_up(methods) -> None:
    """Compiles a small scanned and unrolled stack once (the process's one-time start-up)."""
    scanned, sp, unrolled, up = models("mlp", 2, 8, 2)
    x = _inputs("mlp", 2, 8, 1)
    for method in methods:
        for f, p in ((scanned, sp), (unrolled, up)):
            jax.block_until_ready(_compiled(f, p, x, method)[0](x, None, p))


def measure(kind, depth, width, outputs, n, tokens, rounds, methods, compile_rounds=1) -> list:
    scanned, sp, unrolled, up = models(kind, depth, width, outputs)
    x = _inputs(kind, n, width, tokens)
    cases = {}
    for method in methods:
        ways = [("scan", scanned, sp), ("unrolled", unrolled, up)]
        phases: dict = {"scan": [], "unrolled": []}
        for r in range(compile_rounds):
            for name, f, p in ways if r % 2 == 0 else ways[::-1]:
                compiled, split = _compiled(f, p, x, method)
                phases[name].append(split)
                if r == 0:
                    jax.block_until_ready(compiled(x, None, p))
                    cases[name, method] = (compiled, p, None, [])
        for name in phases:
            median = tuple(statistics.median(t) for t in zip(*phases[name]))
            compiled, p, _, times = cases[name, method]
            cases[name, method] = (compiled, p, median, times)
    for _ in range(rounds):
        for compiled, p, _, times in cases.values():
            start = time.perf_counter()
            jax.block_until_ready(compiled(x, None, p))
            times.append(time.perf_counter() - start)
    return [
        {
            "model": kind,
            "depth": depth,
            "written": name,
            "method": method,
            "steady_s": statistics.median(times),
            "compile_s": sum(phases[:3]),
            "phases_s": phases[:3],
            "xla_cpu_s": phases[3],
        }
        for (name, method), (_, _, phases, times) in cases.items()
    ]


def _phases(row: dict) -> str:
    return " / ".join(f"{t:.2f}" for t in row["phases_s"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round")
    parser.add_argument("--depths", default="6,12")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", default="mlp,transformer")
    parser.add_argument("--jc", action="store_true", help="also time Jacobian contraction")
    parser.add_argument(
        "--compile-rounds", type=int, default=1, help="compiles per case (alternating order)"
    )
    args = parser.parse_args(argv)
    methods = ["structured_derivatives"] + (["jacobian_contraction"] if args.jc else [])
    sizes = {  # width, outputs, n, tokens
        "mlp": (64, 4, 4, 1) if args.quick else (256, 10, 8, 1),
        "transformer": (16, 4, 2, 4) if args.quick else (64, 10, 4, 9),
    }
    rounds = 1 if args.quick else args.rounds
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, float32, full logit blocks")
    warm_up(methods)
    print(
        "| model | depth | method | scan steady s | unrolled steady s | scan/unrolled "
        "| scan compile s | unrolled compile s | trace / lower / XLA compile s (scan; unrolled) "
        "| XLA CPU s (scan; unrolled) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind in args.models.split(","):
        width, outputs, n, tokens = sizes[kind]
        for depth in map(int, args.depths.split(",")):
            rows = measure(
                kind, depth, width, outputs, n, tokens, rounds, methods, args.compile_rounds
            )
            for method in methods:
                get = {r["written"]: r for r in rows if r["method"] == method}
                s, u = get["scan"], get["unrolled"]
                print(
                    f"| {kind} (w={width}, N={n}, O={outputs}) | {depth} | {method} "
                    f"| {s['steady_s']:.4f} | {u['steady_s']:.4f} "
                    f"| {s['steady_s'] / u['steady_s']:.2f} | {s['compile_s']:.2f} "
                    f"| {u['compile_s']:.2f} | {_phases(s)}; {_phases(u)} "
                    f"| {s['xla_cpu_s']:.2f}; {u['xla_cpu_s']:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
