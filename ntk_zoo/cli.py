"""The ``ntk-zoo`` command line (also ``python -m ntk_zoo``).

``ntk-zoo demo`` computes the NTK of a small MLP on scikit-learn's digits by every available
method, checks that they agree and prints their timings.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import ntk_zoo


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
    from architectures.jax import mlp

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

    methods = [ntk_zoo.Method.JACOBIAN_CONTRACTION, ntk_zoo.Method.NTK_VECTOR_PRODUCTS]
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
        if method is ntk_zoo.Method.AUTO:
            est = ", ".join(f"{m}: {c:.2e}" for m, c in costs.items())
            print(f"  auto's cost estimates (FLOP-equivalents): {est}")
        if k.ndim == 2:
            eig = np.linalg.eigvalsh(k)
            print(
                f"  spectrum: trace {np.trace(k):.4g}, lambda_max {eig[-1]:.4g}, "
                f"lambda_min {eig[0]:.4g}, condition number {eig[-1] / eig[0]:.4g}"
            )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ntk-zoo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="NTK of a small MLP on digits by every method, timed.")
    p.add_argument("--n", type=int, default=128, help="number of digits (default 128)")
    p.add_argument("--widths", default="256,256", help="hidden widths (default 256,256)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--repeats", type=int, default=3, help="timed runs per method (median)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
