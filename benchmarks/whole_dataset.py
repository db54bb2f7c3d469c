"""The full 1,797 x 1,797 digits kernel with `ntk_zoo.batched`, each case in a fresh process.

    python -m benchmarks whole-dataset [--n 1797] [--batch-size 256] [--quick]
    python -m benchmarks whole-dataset --job [--n 8000] [--checkout DIR] [--rounds R]
    python -m benchmarks whole-dataset --spectrum kernel.npy [--checkout DIR] [--rounds R]

``--job``: the whole `ntk-zoo run --config configs/mlp.py:width=16` job on ``n`` examples of a
user ``.npz`` (64 Gaussian features, seed 0) with ``--config.ntk.out=kernel.npy``, in a fresh
process: job wall time against the report's kernel time, the spectrum and per-layer steps'
times, the job's peak RSS (``RUSAGE_CHILDREN`` of a wrapper whose only child is the job) against
the kernel's size, and the spectrum's path and residuals. ``--checkout`` runs another checkout's
code (e.g. ``git worktree add /tmp/before main``) for a before/after table; with ``--rounds``
the checkouts alternate, round after round, and a last table gives each one's medians. ``other
s`` is the job's wall time less the report's steps: start-up (imports), data, ``auto``'s choice,
the report and the plot.

``--spectrum FILE``: only ``ntk_zoo.spectrum(FILE, dense_limit=0)`` (the job's streamed path) on
a kernel file the job wrote, in a fresh process of each checkout, alternating: wall and CPU
seconds, the RSS it added, ``λ_max``, ``λ_min`` and the trace against a dense ``eigvalsh`` of
the file (``--dense``: computed once in another process, 1 GB for 8,000 examples).

Per model (the default MLP config and a WRN-10-1): wall time, peak host memory (max RSS of the
subprocess), blocks per second, the same with checkpoint_dir (overhead ratio), kernel entries
per second, and the achieved FLOP rate (from auto's cost model) over this machine's measured
float32 matmul peak.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import tempfile
import time

from benchmarks import _harness

CONFIGS = {
    "mlp": {"family": "mlp", "depth": 2, "width": 512},
    "wrn": {
        "family": "wide_resnet",
        "depth": 10,
        "width": 1,
        "norm": "batch",
        "batch_norm": "batch",
    },
}


def measure(family: str, n: int, batch: int, ckpt: str) -> None:
    """One case, run in a fresh process by :func:`run_case`; replies to the harness."""
    import jax
    import jax.numpy as jnp

    import architectures
    import ntk_zoo
    from ntk_zoo.data import load_digits

    x, _ = load_digits(n, image=family == "wrn")
    x = jnp.asarray(x)
    pure = architectures.build(
        CONFIGS[family], key=jax.random.key(0), input_shape=x.shape[1:], calibration=x[:256]
    )
    kernel_fn = ntk_zoo.ntk_fn(pure)
    method, costs = kernel_fn.choose(x[:batch], x[batch : 2 * batch])
    blocks = math.ceil(n / batch) * (math.ceil(n / batch) + 1) // 2
    whole = ntk_zoo.batched(
        kernel_fn, batch_size=batch, progress=False, checkpoint_dir=ckpt or None
    )
    start = time.perf_counter()
    k = whole(x)
    wall = time.perf_counter() - start
    _harness.reply(
        wall=wall,
        blocks=blocks,
        method=str(method),
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        block_cost=min(costs.values()),
        shape=list(k.shape),
    )


def run_case(family: str, n: int, batch: int, ckpt: str) -> dict:
    """One case in a fresh process; its own max RSS is its peak host memory."""
    return _harness.run_module(
        "benchmarks.whole_dataset", "--measure", family, str(n), str(batch), ckpt
    )


def matmul_peak() -> float:
    import jax
    import jax.numpy as jnp

    a = jnp.ones((2048, 2048), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        f(a).block_until_ready()
        runs.append(time.perf_counter() - start)
    return 2 * 2048**3 / min(runs)


def run_job(n: int, checkout: str) -> dict:
    """The `ntk-zoo run` job in a fresh process of ``checkout``; its figures and peak RSS."""
    import json
    import subprocess
    import sys

    import numpy as np

    with tempfile.TemporaryDirectory() as d:
        data = os.path.join(d, "data.npz")
        rng = np.random.default_rng(0)
        np.savez(data, x=rng.standard_normal((n, 64)).astype(np.float32), y=rng.integers(0, 10, n))
        job = [
            sys.executable, "-m", "ntk_zoo", "run", "--config", "configs/mlp.py:width=16",
            "--workdir", os.path.join(d, "run"), f"--config.data.path={data}",
            f"--config.data.n={n}", "--config.ntk.out=kernel.npy", "--noprogress",
        ]  # fmt: skip
        wrapper = (
            "import resource, subprocess, sys, time; t = time.perf_counter(); "
            "subprocess.run(sys.argv[1:], check=True); "
            "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
        )
        env = {**os.environ, "PYTHONPATH": checkout}
        done = subprocess.run(
            [sys.executable, "-c", wrapper, *job],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        wall, rss_kib = done.stdout.strip().splitlines()[-1].split()
        with open(os.path.join(d, "run", "report.json")) as f:
            report = json.load(f)
    return dict(wall=float(wall), peak_rss_mib=int(rss_kib) / 1024, report=report)


def job_table(n: int, checkouts: list[str], rounds: int = 1) -> None:
    import statistics

    print(f"load before: {os.getloadavg()}")
    print(
        "| round | code | job wall s | kernel s | spectrum s | per-layer s | other s "
        "| job / kernel "
        "| peak RSS MiB | kernel MiB | spectrum path | λ_max | λ_max residual | λ_min "
        "| λ_min residual | trace | load (1 min) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows: dict[str, list[dict]] = {c: [] for c in checkouts}
    for i in range(rounds):
        for checkout in checkouts:
            got = run_job(n, checkout)
            r, t = got["report"], got["report"]["timings_s"]
            spec = r.get("spectrum", {"path": "dense", "lambda_max_residual": 0.0})
            steps = sum(t.get(k, 0.0) for k in ("build", "kernel", "spectrum", "per_layer"))
            row = dict(
                wall=got["wall"],
                kernel=t["kernel"],
                spectrum=t.get("spectrum", float("nan")),
                per_layer=t.get("per_layer", float("nan")),
                other=got["wall"] - steps,
                rss=got["peak_rss_mib"],
            )
            rows[checkout].append(row)
            print(
                f"| {i + 1} | {checkout} | {row['wall']:.1f} | {row['kernel']:.1f} | "
                f"{row['spectrum']:.1f} | {row['per_layer']:.1f} | {row['other']:.1f} | "
                f"{row['wall'] / row['kernel']:.2f} | {row['rss']:.0f} | "
                f"{n * n * 4 / 2**20:.0f} | {spec['path']} | {r['lambda_max']:.6g} | "
                f"{spec['lambda_max_residual']:.2g} | {r['lambda_min']:.10g} | "
                f"{spec.get('lambda_min_residual', 0.0):.2g} | {r['trace']:.7g} | "
                f"{os.getloadavg()[0]:.1f} |",
                flush=True,
            )
    if rounds > 1:
        print("\nmedians over the rounds\n")
        print(
            "| code | job wall s | kernel s | spectrum s | per-layer s | other s | job / kernel |"
        )
        print("|---|---|---|---|---|---|---|")
        for checkout, got in rows.items():
            med = {k: statistics.median(r[k] for r in got) for k in got[0]}
            ratio = statistics.median(r["wall"] / r["kernel"] for r in got)
            print(
                f"| {checkout} | {med['wall']:.1f} | {med['kernel']:.1f} | {med['spectrum']:.1f} "
                f"| {med['per_layer']:.1f} | {med['other']:.1f} | {ratio:.2f} |"
            )
    print(f"load after: {os.getloadavg()}")


_SPECTRUM_CHILD = """
import json, resource, sys, time
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) << 10
import numpy as np
from ntk_zoo.spectrum import spectrum
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS:")
usage = resource.getrusage(resource.RUSAGE_SELF)
start = time.perf_counter()
s = spectrum(sys.argv[1], dense_limit=0)
wall = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF)
cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
print(json.dumps(dict(wall=wall, cpu=cpu, added=status("VmHWM:") - before,
    lambda_max=s.lambda_max, lambda_min=s.lambda_min, trace=s.trace,
    effective_rank=s.effective_rank, effective_rank_error=s.effective_rank_error,
    method=s.lambda_min_method)))
"""


def spectrum_table(path: str, checkouts: list[str], rounds: int, dense: bool) -> None:
    """The streamed spectrum of ``path`` alone, each checkout in a fresh process, alternating."""
    import json
    import statistics
    import subprocess
    import sys

    import numpy as np

    ref = None
    if dense:
        code = (
            "import sys, json, numpy as np; k = np.load(sys.argv[1]).astype(np.float64); "
            "k = (k + k.T) / 2; w = np.linalg.eigvalsh(k); "
            "print(json.dumps([float(w[-1]), float(w[0]), float(np.trace(k))]))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code, path], capture_output=True, text=True, check=True
        )
        ref = json.loads(done.stdout)
        print(f"dense eigvalsh: λ_max {ref[0]!r}, λ_min {ref[1]!r}, trace {ref[2]!r}")
    size = int(np.prod(np.load(path, mmap_mode="r").shape))
    print(f"kernel {path}: {size * 4 / 2**20:.0f} MiB of float32; load {os.getloadavg()}")
    print(
        "| round | code | wall s | CPU s | RSS added MiB | λ_max | λ_min | λ_min method "
        "| effective rank | rel. λ_max | rel. λ_min | rel. trace | load (1 min) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    got: dict[str, list[dict]] = {c: [] for c in checkouts}
    for i in range(rounds):
        for checkout in checkouts:
            done = subprocess.run(
                [sys.executable, "-W", "ignore", "-c", _SPECTRUM_CHILD, os.path.abspath(path)],
                cwd=checkout,
                env={**os.environ, "PYTHONPATH": checkout},
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(done.stdout.strip().splitlines()[-1])
            got[checkout].append(r)
            rel = (
                [abs(r[k] - v) / abs(v) for k, v in zip(("lambda_max", "lambda_min", "trace"), ref)]
                if ref
                else [float("nan")] * 3
            )
            print(
                f"| {i + 1} | {checkout} | {r['wall']:.2f} | {r['cpu']:.2f} | "
                f"{r['added'] / 2**20:.0f} | {r['lambda_max']:.12g} | {r['lambda_min']:.12g} | "
                f"{r['method']} | {r['effective_rank']:.3f} ± {r['effective_rank_error']:.3f} | "
                f"{rel[0]:.2g} | {rel[1]:.2g} | {rel[2]:.2g} | {os.getloadavg()[0]:.1f} |",
                flush=True,
            )
    print("\n| code | median wall s | median CPU s | max RSS added MiB |")
    print("|---|---|---|---|")
    for checkout, rs in got.items():
        print(
            f"| {checkout} | {statistics.median(r['wall'] for r in rs):.2f} | "
            f"{statistics.median(r['cpu'] for r in rs):.2f} | "
            f"{max(r['added'] for r in rs) / 2**20:.0f} |"
        )
    print(f"load after: {os.getloadavg()}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1797)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="n=64, blocks of 32, MLP only")
    parser.add_argument("--job", action="store_true", help="the ntk-zoo run job (default n=8000)")
    parser.add_argument(
        "--checkout", action="append", help="--job: a checkout to run (repeatable; default this)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="--job/--spectrum: alternations")
    parser.add_argument("--spectrum", help="a kernel .npy: time only its streamed spectrum")
    parser.add_argument("--dense", action="store_true", help="--spectrum: against eigvalsh")
    parser.add_argument("--measure", nargs=4, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    if args.job:
        n = 8000 if args.n == 1797 else args.n
        job_table(n, args.checkout or [_harness.ROOT], args.rounds)
        return
    if args.spectrum:
        spectrum_table(args.spectrum, args.checkout or [_harness.ROOT], args.rounds, args.dense)
        return
    if args.measure:
        family, n, batch, ckpt = args.measure
        measure(family, int(n), int(batch), ckpt)
        return
    n, batch = (64, 32) if args.quick else (args.n, args.batch_size)
    families = ("mlp",) if args.quick else ("mlp", "wrn")
    peak = matmul_peak()
    print(f"float32 matmul peak: {peak / 1e9:.1f} GFLOP/s\n")
    print(
        "| model | method | n | block | wall s | blocks/s | peak RSS MiB | entries/s | "
        "FLOP rate / matmul peak | with checkpoint_dir: wall s | overhead |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for family in families:
        plain = run_case(family, n, batch, "")
        with tempfile.TemporaryDirectory() as d:
            ckpt = run_case(family, n, batch, os.path.join(d, "ckpt"))
        rate = plain["block_cost"] * plain["blocks"] / plain["wall"]
        print(
            f"| {family} | {plain['method']} | {n} | {batch} | "
            f"{plain['wall']:.1f} | {plain['blocks'] / plain['wall']:.2f} | "
            f"{plain['peak_rss_mib']:.0f} | {n**2 / plain['wall']:.3g} | "
            f"{rate / peak:.2f} | {ckpt['wall']:.1f} | {ckpt['wall'] / plain['wall']:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
