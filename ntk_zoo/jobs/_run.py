"""The ``ntk-zoo run`` job: build a zoo model, load data, compute and report its NTK."""

from __future__ import annotations

import json
import math
import operator
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import architectures
from ntk_zoo.data import load_dataset
from ntk_zoo.engine import forward_flops, ntk_fn
from ntk_zoo.jobs._command import ConfigCommand
from ntk_zoo.parallel import batched
from ntk_zoo.spectrum import plot_spectrum, spectrum, trace_shares


def join_processes(distributed: Any) -> bool:
    """Joins the other processes of a multi-host run; whether this process writes the artefacts.

    ``distributed.coordinator_address`` empty: one process, which writes. ``"auto"``:
    ``jax.distributed.initialize()`` detects the cluster (Slurm, Kubernetes, Cloud TPU); otherwise
    the address, ``num_processes`` and ``process_id`` are passed on. Only process 0 writes into
    the workdir: the others compute their share of the kernel's blocks and write nothing.
    Must run before any other JAX computation.
    """
    address = distributed.coordinator_address
    if address and not jax.distributed.is_initialized():
        if jax.config.jax_cpu_collectives_implementation is None:  # older JAX's default
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        if address == "auto":
            jax.distributed.initialize()
        else:
            jax.distributed.initialize(**distributed.to_dict())
    return jax.process_index() == 0


def per_layer_trace_share(pure, x, trace_axes, block: int) -> dict[str, float]:
    """Each module's share of ``trace Θ(x, x)``, from per-example diagonal kernels.

    The diagonal is computed ``block`` examples at a time (Jacobian contraction gives per-leaf
    contributions for free) and grouped by :func:`ntk_zoo.spectrum.trace_shares`.
    """
    diag_fn = ntk_fn(
        pure,
        method="jacobian_contraction",
        trace_axes=trace_axes or (-1,),
        diagonal_axes=(0,),
        sum_params=False,
    )
    totals = None
    for start in range(0, x.shape[0], block):
        traces = jax.tree.map(
            lambda d: float(np.sum(np.asarray(d), dtype=np.float64)),
            diag_fn(x[start : start + block]),
        )
        totals = traces if totals is None else jax.tree.map(operator.add, totals, traces)
    return trace_shares(totals)


def run_experiment(config: Any, workdir: str, *, progress: bool = True) -> dict[str, Any] | None:
    """Runs ``config`` and writes ``kernel.npz``, ``report.json`` and ``spectrum.png``.

    ``config`` has the sections of :func:`ntk_zoo.config.base_config` (``seed``, ``model``,
    ``data``, ``ntk``, ``output``); see ``configs/mlp.py``. Returns what ``report.json`` holds.
    With several processes (``config.ntk.distributed``), every process computes its share of the
    kernel and only process 0 gathers it, reports and writes; the others return ``None``.
    """
    writer = join_processes(config.ntk.distributed)  # before any other JAX computation
    several = jax.process_count() > 1
    dtype = jnp.dtype(config.ntk.dtype)
    x, y = load_dataset(config.data, dtype=str(dtype))
    family = config.model.family
    if family in ("wide_resnet", "vit") and x.ndim != 4:
        raise ValueError(
            f"The {family} family needs images (n, height, width, channels); the data has shape "
            f"{x.shape}. Set --config.data.image=True for digits, or reshape your .npz."
        )
    x = jnp.asarray(x)
    key = jax.random.key(config.seed)
    calibration = x[: min(len(x), 256)]
    start = time.perf_counter()
    pure = architectures.build(
        config.model, key=key, input_shape=x.shape[1:], calibration=calibration, dtype=dtype
    )
    build_s = time.perf_counter() - start
    if not config.ntk.vmap:
        pure = pure._replace(vmap_axes=None)
    trace_axes = tuple(config.ntk.trace_axes)
    cotangents = config.ntk.get("cotangents") or None
    kernel_fn = ntk_fn(pure, method=config.ntk.method, trace_axes=trace_axes, cotangents=cotangents)
    probe = x[: min(len(x), config.ntk.batch_size or 256)]
    chosen, costs = kernel_fn.choose(probe)
    method_used = chosen if config.ntk.method == "auto" else config.ntk.method

    if pure.vmap_axes is None:  # examples interact (or vmap off): one whole-batch kernel
        whole = lambda x: np.asarray(kernel_fn(x))
    else:
        whole = batched(
            kernel_fn,
            batch_size=config.ntk.batch_size or None,
            memory_budget=config.ntk.memory_budget or None,
            mesh=bool(config.ntk.mesh) or several or None,  # processes share the blocks
            progress=progress,
            checkpoint_dir=config.ntk.checkpoint_dir or None,
            gather="process0",
            out=os.path.join(workdir, config.ntk.out) if config.ntk.out else None,
        )
    start = time.perf_counter()
    kernel = whole(x)
    kernel_s = time.perf_counter() - start
    if not writer:
        return None
    start = time.perf_counter()
    limit = config.ntk.get("dense_spectrum_limit", None)
    spec = spectrum(kernel, dense_limit=None if limit is None or limit < 0 else int(limit))
    spectrum_s = time.perf_counter() - start
    start = time.perf_counter()
    shares = (
        per_layer_trace_share(pure, x, trace_axes, config.ntk.batch_size or 256)
        if config.ntk.per_layer
        else {}
    )
    shares_s = time.perf_counter() - start
    n_params = sum(math.prod(a.shape) for a in jax.tree.leaves(pure.params))
    flops = forward_flops(pure.apply, pure.params, x[:1], {})

    estimates = ", ".join(f"{k}={v:.3g}" for k, v in costs.items())
    stats = getattr(whole, "stats", None)  # batched: what its block programs ran
    if stats is None or not stats.method:  # one whole-batch kernel: the probe's pick ran
        ran, source, times, excluded, kept = (
            str(method_used),
            "estimate" if config.ntk.method == "auto" else "given",
            {},
            {},
            0,
        )
    else:
        ran, source = stats.method, stats.method_source
        times, excluded = dict(stats.method_times), dict(stats.method_excluded)
        kept = stats.measured_blocks
    timed = ", ".join(f"{k}={v:.3g} s" for k, v in times.items())
    reason = {
        "given": "chosen in the config",
        "measured": f"auto timed the candidates on a real block ({timed}) and kept the fastest",
        "wisdom": f"auto reused the pick timed on an earlier run ({timed})",
    }.get(source, f"auto picked the lowest estimated cost: {estimates}")
    report = {
        "config": config.to_dict(),
        "data": {"n": int(x.shape[0]), "example_shape": list(x.shape[1:])},
        "method": ran,
        "method_reason": reason,
        "method_costs": costs,
        "method_source": source,  # given, estimate, measured or wisdom
        "method_times": times,  # measured seconds per block of each candidate
        "method_excluded": excluded,  # the methods auto did not time, with why
        "measured_blocks": kept,  # blocks auto's timing calls computed and the kernel kept
        **({"probe_method": str(method_used)} if ran != str(method_used) else {}),
        "timings_s": {
            "build": build_s,
            "kernel": kernel_s,
            "spectrum": spectrum_s,
            "per_layer": shares_s,
        },
        "processes": jax.process_count(),
        "n_params": n_params,
        "flops_per_example": flops,
        "kernel_shape": list(kernel.shape),
        "trace": spec.trace,
        "lambda_max": spec.lambda_max,
        "lambda_min": spec.lambda_min,
        "condition_number": spec.condition_number,
        "effective_rank": spec.effective_rank,
        "n_nonpositive_eigenvalues": spec.n_nonpositive,
        "spectrum": {
            "path": spec.path,
            "lambda_max_residual": spec.lambda_max_residual,
            "lambda_min_residual": spec.lambda_min_residual,
            "lambda_min_method": spec.lambda_min_method,  # dense, lanczos or shift_invert
            "shift": spec.shift,  # δ of the factorised K + δI (shift_invert)
            "effective_rank_error": spec.effective_rank_error,
            "eigenvalues_kept": int(spec.eigenvalues.size),
        },
        "per_layer_trace_share": shares,
    }
    if config.output.save_kernel:
        arrays = {"eigenvalues": spec.eigenvalues}
        if not config.ntk.out:  # else the kernel is in its own .npy file already
            arrays["kernel"] = kernel
        if y is not None:
            arrays["labels"] = np.asarray(y)
        np.savez(os.path.join(workdir, "kernel.npz"), **arrays)
    with open(os.path.join(workdir, "report.json"), "w") as f:
        json.dump(report, f, indent=2, default=float)
    if config.output.plot:
        title = f"{family} ({config.model.framework}), n={x.shape[0]}"
        if spec.path != "dense":
            title += f", top {spec.eigenvalues.size} ({spec.path})"
        plot_spectrum(spec.eigenvalues, os.path.join(workdir, "spectrum.png"), title=title)
    return report


_LAMBDA_MIN_WAYS = {
    "shift_invert": "shift-invert, an out-of-core Cholesky",
    "lanczos": "Lanczos",
}


def summary(report: dict[str, Any]) -> str:
    """A short table for the terminal."""
    model = report["config"]["model"]
    rows = [
        ("model", f"{model['family']} ({model['framework']}), {report['n_params']:,} params"),
        (
            "data",
            f"{report['data']['n']} examples of shape {tuple(report['data']['example_shape'])}",
        ),
        ("method", f"{report['method']} ({report.get('method_source', 'estimate')})"),
        ("kernel", f"{tuple(report['kernel_shape'])} in {report['timings_s']['kernel']:.2f} s"),
        ("FLOPs/example", f"{report['flops_per_example']:.3g}"),
        ("trace", f"{report['trace']:.4g}"),
        ("lambda_max", f"{report['lambda_max']:.4g}"),
        ("lambda_min", f"{report['lambda_min']:.4g}"),
        ("condition no.", f"{report['condition_number']:.4g}"),
    ]
    streamed = report.get("spectrum", {})
    if streamed.get("path", "dense") != "dense":
        rows.append(
            (
                "spectrum",
                f"{streamed['path']} (block Lanczos from the file; lambda_min by "
                f"{_LAMBDA_MIN_WAYS.get(streamed.get('lambda_min_method'), 'Lanczos')}); "
                f"residuals lambda_max ±{streamed['lambda_max_residual']:.2g}, "
                f"lambda_min ±{streamed['lambda_min_residual']:.2g}, effective rank "
                f"{report['effective_rank']:.4g} ± {streamed['effective_rank_error']:.2g}",
            )
        )
    if report["n_nonpositive_eigenvalues"]:
        rows.append(("eigenvalues <= 0", str(report["n_nonpositive_eigenvalues"])))
    top = sorted(report["per_layer_trace_share"].items(), key=lambda kv: -kv[1])[:3]
    if top:
        rows.append(("top trace share", ", ".join(f"{k} {v:.0%}" for k, v in top)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


RUN = ConfigCommand(
    name="run",
    summary="NTK of a zoo model from a config file: kernel, spectrum, report.",
    description=(
        "Builds a zoo model (MLP, WideResNet or ViT in linen, NNX or Haiku) from an\n"
        "ml_collections config, computes its NTK on the data with a progress bar (by the\n"
        "method auto picks, in blocks, optionally over devices), and writes kernel.npz,\n"
        "report.json and spectrum.png to --workdir. Configs: configs/mlp.py,\n"
        "configs/wide_resnet.py, configs/vit.py."
    ),
    config="configs/mlp.py",
    examples=(
        "ntk-zoo run --config configs/mlp.py --workdir runs/mlp",
        "ntk-zoo run --config configs/mlp.py:framework=haiku,depth=3,width=1024 --workdir runs/m3",
        "ntk-zoo run --config configs/vit.py:variant=test/2,depth=4,width=32 --workdir runs/vit",
        'ntk-zoo run --config configs/mlp.py --workdir runs/full --config.ntk.trace_axes="()"',
        "ntk-zoo run --config configs/mlp.py --workdir runs/2p --config.ntk.out=kernel.npy "
        "--config.ntk.distributed.coordinator_address=localhost:12355 "
        "--config.ntk.distributed.num_processes=2 --config.ntk.distributed.process_id=0  "
        "(and process_id=1 in a second shell)",
        "ntk-zoo run --config configs/wide_resnet.py --help   (that config's fields)",
    ),
    job=run_experiment,
    report=summary,
    float64=lambda config: config.ntk.dtype == "float64",
    writer=lambda config: join_processes(config.ntk.distributed),
)
