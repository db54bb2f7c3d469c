"""One kernel over 1, 2, ... processes (jax.distributed on localhost, one CPU device each).

    python -m benchmarks processes [--n 1797] [--block 64] [--width 128] [--repeats 3]
        [--processes-list 1,2] [--gather all,process0,none] [--quick]

Each process is pinned to its own core (``os.sched_setaffinity``, process ``i`` on the ``i``-th
core this suite may use) and runs one XLA thread, so the speed-up is the processes', not the
machine's load or XLA's thread pool. ``--gather all`` gathers every block to every process
(``process_allgather``); ``--gather process0`` sends each other process's blocks to process 0
alone (point to point); ``--gather none`` sends nothing: each process writes its own blocks
into one shared ``out=`` file. Run it on a quiet machine with at least as many idle cores as the
largest process count.

The digits kernel of a 64-W-W-10 ReLU MLP (logits traced, float32, Jacobian contraction) cut into
``--block``-example blocks (512 / 64: 36 blocks of the symmetric half), computed by
``ntk_zoo.batched(..., mesh=True)`` over 1 process, then over 2 processes that share the blocks
and gather them with ``multihost_utils.process_allgather``. Each process has one CPU device
running one thread (``intra_op_parallelism_threads=1``), so that "a device" is one core.

Reported per configuration (median of ``--repeats`` fresh launches, alternating): wall time of
the ``batched`` call after a warm-up that compiled the block program, speed-up, blocks per
second per device, and the time process 0 spends outside computing its blocks (gathering across
processes and placing blocks into the kernel, from ``whole.stats``). Prints a Markdown table
(``python -m benchmarks`` keeps it in ``benchmarks/results/processes.md``) and writes the raw runs
to ``benchmarks/results/processes.json``.

Several processes cannot share one process of the suites' harness (``_harness.py`` times one
process per measurement), so this suite starts its own: fresh processes per launch, alternating
configurations, medians, as the harness does.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def worker(args: argparse.Namespace) -> None:
    """One process: warm up, then time one ``batched`` call; process 0 prints JSON."""
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[args.process_id % len(cores)]})  # before XLA starts threads
    import jax

    jax.config.update("jax_num_cpu_devices", 1)
    if args.processes > 1:
        jax.distributed.initialize(
            coordinator_address=f"localhost:{args.port}",
            num_processes=args.processes,
            process_id=args.process_id,
        )
    import jax.numpy as jnp
    import numpy as np
    from jax.experimental import multihost_utils

    import ntk_zoo

    x, _ = ntk_zoo.data.load_digits(args.n)
    sizes = [x.shape[1], args.width, args.width, 10]
    keys = jax.random.split(jax.random.key(0), len(sizes) - 1)
    params = [
        (jax.random.normal(k, (a, b)) / np.sqrt(a), jnp.zeros(b))
        for k, a, b in zip(keys, sizes[:-1], sizes[1:])
    ]

    def mlp(params, x):
        for w, b in params[:-1]:
            x = jax.nn.relu(x @ w + b)
        w, b = params[-1]
        return x @ w + b

    kernel_fn = ntk_zoo.ntk_fn(mlp, method="jacobian_contraction", vmap_axes=0)
    options = dict(batch_size=args.block, mesh=True, progress=False, gather=args.gather)

    def batched(name):  # gather="none": each process writes its blocks into one shared file
        out = os.path.join(args.tmp, f"{name}.npy") if args.gather == "none" else None
        return ntk_zoo.batched(kernel_fn, out=out, **options)

    batched("warm")(x[: 2 * args.block], None, params)  # warm-up: compiles the block program
    multihost_utils.sync_global_devices("warm")
    whole = batched("k")
    kernel = whole(x, None, params)
    if args.gather == "none":
        multihost_utils.sync_global_devices("written")
        kernel = np.load(os.path.join(args.tmp, "k.npy"), mmap_mode="r")
    stats = whole.stats  # where this process's time went
    blocks = -(-args.n // args.block)
    blocks = blocks * (blocks + 1) // 2
    if args.process_id == 0:
        result = {
            "processes": args.processes,
            "gather": args.gather,
            "wall_s": stats.wall_s,
            "blocks": blocks,
            "computed": stats.computed,
            "compute_s": stats.compute_s,
            "gather_s": stats.gather_s,
            "place_s": stats.place_s,
            "outside_compute_s": stats.wall_s - stats.compute_s,
            "trace": float(np.trace(kernel)),
        }
        print("RESULT " + json.dumps(result), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(processes: int, args: argparse.Namespace, gather: str = "all") -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {ONE_THREAD}".strip()
    port = str(free_port())
    common = ["--n", str(args.n), "--block", str(args.block), "--width", str(args.width)]
    with tempfile.TemporaryDirectory() as tmp:
        common += ["--gather", gather, "--tmp", tmp]
        logs = [open(os.path.join(tmp, f"{i}.log"), "w+") for i in range(processes)]
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    "--processes",
                    str(processes),
                    "--process-id",
                    str(i),
                    "--port",
                    port,
                    *common,
                ],
                env=env,
                stdout=logs[i],
                stderr=subprocess.STDOUT,
            )
            for i in range(processes)
        ]
        codes = [p.wait(timeout=900) for p in procs]
        logs[0].seek(0)
        text = logs[0].read()
        for log in logs:
            log.close()
    if codes != [0] * processes:
        raise RuntimeError(f"workers exited with {codes}:\n{text[-3000:]}")
    line = next(ln for ln in text.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (a smoke run)")
    parser.add_argument("--n", type=int, default=1797)  # all of the digits
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--processes-list", default="1,2", help="process counts, e.g. 1,2,4")
    parser.add_argument(
        "--gather", default="all,process0,none", help="modes: all, process0, none (out=)"
    )
    parser.add_argument("--tmp", default="", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--port", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.quick:
        args.n, args.block, args.width, args.repeats = 128, 32, 32, 1
    counts = [int(c) for c in args.processes_list.split(",")]
    modes = args.gather.split(",")
    if max(counts) > len(os.sched_getaffinity(0)):
        raise SystemExit(f"{max(counts)} processes need as many cores; this suite may use "
                         f"{len(os.sched_getaffinity(0))}.")  # fmt: skip

    runs = {(g, p): [] for g in modes for p in counts}
    for _ in range(args.repeats):  # alternating, so that load from elsewhere hits all alike
        for g, p in runs:
            runs[g, p].append(launch(p, args, g))
            print(f"  gather={g}, {p} process(es): {runs[g, p][-1]['wall_s']:.2f} s", flush=True)
    numeric = lambda r: {k: v for k, v in r.items() if k not in ("processes", "gather")}
    median = {
        key: {k: statistics.median(numeric(r)[k] for r in rs) for k in numeric(rs[0])}
        for key, rs in runs.items()
    }
    rows = []
    for (g, p), m in median.items():
        base = median[g, counts[0]]["wall_s"] * counts[0]
        rows.append(
            {
                "gather": g,
                "processes": p,
                "devices": p,
                "blocks": int(m["blocks"]),
                "wall_s": m["wall_s"],
                "speed_up": base / m["wall_s"],  # over one process (scaled if not run)
                "blocks_per_s_per_device": m["blocks"] / m["wall_s"] / p,
                "outside_compute_s": m["outside_compute_s"],
                "gather_s": m["gather_s"],
            }
        )
    import jax

    meta = {
        "pinned": "one core per process (os.sched_setaffinity), one XLA thread",
        "load_at_end": os.getloadavg(),
        "n": args.n,
        "block": args.block,
        "width": args.width,
        "repeats": args.repeats,
        "jax": jax.__version__,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "same_trace": len({round(r["trace"], 2) for rs in runs.values() for r in rs}) == 1,
    }
    name = "processes-quick.json" if args.quick else "processes.json"
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", name), "w") as f:
        raw = {f"{g}/{p}": rs for (g, p), rs in runs.items()}
        json.dump({"meta": meta, "rows": rows, "runs": raw}, f, indent=2)
    print(json.dumps(meta))
    print(
        "| gather | processes × CPU devices | blocks | wall s | speed-up | blocks/s per device "
        "| outside compute s (gather s) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['gather']} | {r['processes']} × 1 | {r['blocks']} | {r['wall_s']:.2f} | "
            f"{r['speed_up']:.2f}× | {r['blocks_per_s_per_device']:.1f} | "
            f"{r['outside_compute_s']:.2f} ({r['gather_s']:.2f}) |"
        )


if __name__ == "__main__":
    main()
