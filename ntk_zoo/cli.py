"""The ``ntk-zoo`` command line (also ``python -m ntk_zoo``).

``ntk-zoo run --config configs/<family>.py[:args] --workdir DIR [--config.x.y=value ...]``
builds a zoo model from an ml_collections config, computes its NTK on the data with a progress
bar, and writes ``kernel.npz``, ``report.json`` and ``spectrum.png`` to ``DIR``.

``ntk-zoo nas --config configs/nas.py[:args] --workdir DIR`` samples zoo architectures, scores
each by NTK proxies at initialisation, trains each briefly, and writes ``nas.json``,
``ranking.md`` and ``proxies.png`` (proxies against accuracy, with Kendall τ).

``ntk-zoo train --config configs/train.py[:args] --workdir DIR`` trains zoo models of several
widths on digits and records how their NTK moves (distance from init, alignment with the labels,
κ) and how far they stray from their linearisation; writes ``dynamics.json``, ``dynamics.png``
and ``kernels.npz``.

``ntk-zoo demo`` computes the NTK of a small MLP on scikit-learn's digits by every available
method, checks that they agree and prints their timings.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

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


RUN_USAGE = (
    "usage: ntk-zoo run --config configs/<family>.py[:key=value,...] --workdir DIR "
    "[--overwrite] [--noprogress] [--config.section.key=value ...]"
)


class UsageError(Exception):
    """A mistake on the command line: reported in one line, no traceback."""


def _config_path(argv: Sequence[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


NAS_USAGE = (
    "usage: ntk-zoo nas --config configs/nas.py[:key=value,...] --workdir DIR "
    "[--overwrite] [--noprogress] [--config.section.key=value ...]"
)


def _parse_run(argv: Sequence[str], command: str = "run", usage: str = RUN_USAGE) -> Any:
    from absl import flags
    from ml_collections import config_flags

    argv = [f"ntk-zoo {command}", *argv]
    path = _config_path(argv)
    if path is None:
        raise UsageError(f"--config is required\n{usage}")
    if not os.path.isfile(path.split(":", 1)[0]):
        raise UsageError(f"config file {path.split(':', 1)[0]!r} not found")
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=fv, sys_argv=argv)
    flags.DEFINE_string("workdir", None, "where outputs are written", flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "allow a non-empty workdir", flag_values=fv)
    flags.DEFINE_bool("progress", True, "show a progress bar", flag_values=fv)
    try:
        with warnings.catch_warnings():  # ml_collections loads config files with load_module()
            warnings.filterwarnings("ignore", "the load_module", DeprecationWarning)
            fv(argv)
    except (AttributeError, KeyError) as e:
        overrides = [a for a in argv if a.startswith("--config.")]
        raise UsageError(f"unknown config key {e} in overrides {overrides}") from None
    except flags.Error as e:
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        raise UsageError(lines[-1] if "Traceback" in str(e) else lines[0]) from None
    if not fv.workdir:
        raise UsageError(f"--workdir is required\n{usage}")
    return fv


def run(argv: Sequence[str]) -> int:
    from ntk_zoo._experiment import prepare_workdir, run_experiment, summary

    fv = _parse_run(argv)
    config = fv.config
    if config.ntk.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    try:
        prepare_workdir(fv.workdir, fv.overwrite)
        report = run_experiment(config, fv.workdir, progress=fv.progress)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        raise UsageError(str(e).splitlines()[0]) from None
    print(f"ntk-zoo run: {fv.workdir}")
    print(summary(report))
    print(f"  wrote {', '.join(sorted(os.listdir(fv.workdir)))}")
    return 0


def nas(argv: Sequence[str]) -> int:
    from ntk_zoo._experiment import prepare_workdir
    from ntk_zoo.nas import ranking_table, run_search

    fv = _parse_run(argv, "nas", NAS_USAGE)
    config = fv.config
    if config.proxies.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    try:
        prepare_workdir(fv.workdir, fv.overwrite)
        report = run_search(config, fv.workdir, progress=fv.progress)
    except (ValueError, KeyError, AttributeError, FileExistsError) as e:
        raise UsageError(str(e).strip("'\"").splitlines()[0]) from None
    print(f"ntk-zoo nas: {fv.workdir} ({report['wall_s']:.0f} s)")
    print(ranking_table(report))
    print(f"  wrote {', '.join(sorted(os.listdir(fv.workdir)))}")
    return 0


TRAIN_USAGE = (
    "usage: ntk-zoo train --config configs/train.py[:key=value,...] --workdir DIR "
    "[--overwrite] [--noprogress] [--config.section.key=value ...]"
)


def _train_help() -> str:
    """Usage, the config's docstring (examples, arguments) and its fields with defaults."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "train.py")
    lines = [TRAIN_USAGE, ""]
    if os.path.isfile(path):
        spec = importlib.util.spec_from_file_location("ntk_zoo_train_config", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        lines += [module.__doc__.strip(), "", "config fields (--config.<field>=value), defaults:"]

        def walk(prefix: str, node: Any) -> None:
            for key, value in node.items():
                if hasattr(value, "items"):
                    walk(f"{prefix}{key}.", value)
                else:
                    lines.append(f"  {prefix}{key} = {value!r}")

        walk("", module.get_config().to_dict())
    return "\n".join(lines)


def train(argv: Sequence[str]) -> int:
    from ntk_zoo._experiment import prepare_workdir
    from ntk_zoo.jobs import run_training, train_summary

    if {"-h", "--help"} & set(argv):
        print(_train_help())
        return 0
    fv = _parse_run(argv, "train", TRAIN_USAGE)
    config = fv.config
    if config.ntk.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    try:
        prepare_workdir(fv.workdir, fv.overwrite)
        report = run_training(config, fv.workdir, progress=fv.progress)
    except (ValueError, KeyError, AttributeError, FileExistsError) as e:
        raise UsageError(str(e).strip("'\"").splitlines()[0]) from None
    print(f"ntk-zoo train: {fv.workdir} ({report['wall_s']:.0f} s)")
    print(train_summary(report))
    print(f"  wrote {', '.join(sorted(os.listdir(fv.workdir)))}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ntk-zoo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="NTK of a zoo model from a config file (see `ntk-zoo run`).")
    sub.add_parser("nas", help="Training-free architecture search (see `ntk-zoo nas`).")
    sub.add_parser("train", help="How the NTK moves during training (see `ntk-zoo train`).")
    p = sub.add_parser("demo", help="NTK of a small MLP on digits by every method, timed.")
    p.add_argument("--n", type=int, default=128, help="number of digits (default 128)")
    p.add_argument("--widths", default="256,256", help="hidden widths (default 256,256)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--repeats", type=int, default=3, help="timed runs per method (median)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["run"], ["nas"], ["train"]):
        try:
            return {"run": run, "nas": nas, "train": train}[argv[0]](argv[1:])
        except UsageError as e:
            print(f"ntk-zoo: error: {e}", file=sys.stderr)
            return 2
    args = _parser().parse_args(argv)
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
