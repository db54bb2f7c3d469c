"""The ``ntk-zoo demo`` job: one small MLP on digits, its NTK by every method, timed."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import ntk_zoo
from architectures.jax import mlp
from ntk_zoo.jobs._command import ArgsCommand


def _time(fn: Callable[[], jax.Array], repeats: int) -> tuple[float, float, jax.Array]:
    """(first call incl. compilation, median steady-state call) in seconds, and the result."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - start
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        runs.append(time.perf_counter() - start)
    return first, statistics.median(runs), out


def demo(args: argparse.Namespace) -> int:
    """Prints the kernels' agreement and timings by every method (and auto's choice)."""
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    x, _ = ntk_zoo.data.load_digits(args.n, dtype=args.dtype)
    widths = [int(w) for w in args.widths.split(",")]
    params = mlp.init(
        jax.random.key(args.seed), x.shape[1], widths, 10, dtype=jnp.dtype(args.dtype)
    )
    n_params = sum(a.size for a in jax.tree.leaves(params))
    x = jnp.asarray(x)
    arch = "-".join(str(d) for d in [x.shape[1], *widths, 10])
    print("ntk_zoo demo: the empirical NTK of an MLP on scikit-learn's digits")
    print(f"  data   {x.shape[0]} digits, {x.shape[1]} pixels each, 10 logits")
    print(f"  model  MLP {arch}, ReLU, NTK parameterisation, {n_params:,} params, {args.dtype}")
    print(
        f"  device {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}"
    )

    methods = [m for m in ntk_zoo.Method if m is not ntk_zoo.Method.AUTO]
    for trace_axes, label in (((-1,), "mean over logits"), ((), "full logit blocks")):
        print(f"\nkernel with trace_axes={trace_axes} ({label}), vmap_axes=0")
        print(f"  {'method':<34} {'first call s':>12} {'steady ms':>10} {'rel. diff':>10}")
        reference = None
        for method in [*methods, ntk_zoo.Method.AUTO]:
            kernel_fn = ntk_zoo.ntk_fn(mlp.apply, method=method, trace_axes=trace_axes, vmap_axes=0)
            first, steady, k = _time(lambda kf=kernel_fn: kf(x, None, params), args.repeats)
            k = np.asarray(k, np.float64)
            reference = k if reference is None else reference
            diff = np.max(np.abs(k - reference)) / np.max(np.abs(reference))
            name = str(method)
            if method is ntk_zoo.Method.AUTO:
                chosen, costs = kernel_fn.choose(x, None, params)
                name = f"auto -> {chosen}"
            print(f"  {name:<34} {first:>12.2f} {steady * 1e3:>10.1f} {diff:>10.1e}")
        est = ", ".join(f"{m}: {c:.2e}" for m, c in costs.items())
        print(f"  auto's cost estimates (seconds): {est}")
        if k.ndim == 2:
            eig = np.linalg.eigvalsh(k)
            print(
                f"  spectrum: trace {np.trace(k):.4g}, lambda_max {eig[-1]:.4g}, "
                f"lambda_min {eig[0]:.4g}, condition number {eig[-1] / eig[0]:.4g}"
            )
    return 0


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=128, help="number of digits")
    parser.add_argument("--widths", default="256,256", help="hidden widths, comma-separated")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method (median)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed")


DEMO = ArgsCommand(
    name="demo",
    summary="NTK of a small MLP on digits by every method: agreement and timings.",
    description=(
        "Computes the NTK of a plain-JAX MLP on scikit-learn's digits by every method\n"
        "(Jacobian contraction, NTK-vector products, structured derivatives, auto), for the\n"
        "logit-averaged and the full-logit-block kernel; prints first-call and steady timings,\n"
        "the methods' agreement, auto's choice and cost estimates, and the spectrum."
    ),
    examples=(
        "ntk-zoo demo",
        "ntk-zoo demo --n 512 --widths 1024,1024 --repeats 5",
        "ntk-zoo demo --dtype float64 --n 64",
    ),
    arguments=_arguments,
    run=demo,
)
