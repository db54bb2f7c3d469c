"""The full 1,797 x 1,797 digits kernel with `ntk_zoo.batched`, each case in a subprocess.

    .venv/bin/python benchmarks/whole_dataset.py [--n 1797] [--batch-size 256]

Per model (the default MLP config and a WRN-10-1): wall time, peak host memory (max RSS of the
subprocess), blocks per second, the same with checkpoint_dir (overhead ratio), kernel entries
per second, and the achieved FLOP rate (from auto's cost model) over this machine's measured
float32 matmul peak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, sys, time, math
import jax, jax.numpy as jnp
import architectures, ntk_zoo
from ntk_zoo.data import load_digits
family, n, batch, ckpt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
config = {"mlp": {"family": "mlp", "depth": 2, "width": 512},
          "wrn": {"family": "wide_resnet", "depth": 10, "width": 1, "norm": "batch",
                  "batch_norm": "batch"}}[family]
x, _ = load_digits(n, image=family == "wrn")
x = jnp.asarray(x)
pure = architectures.build(config, key=jax.random.key(0), input_shape=x.shape[1:],
                           calibration=x[:256])
kernel_fn = ntk_zoo.ntk_fn(pure)
method, costs = kernel_fn.choose(x[:batch], x[batch:2 * batch])
blocks = math.ceil(n / batch) * (math.ceil(n / batch) + 1) // 2
whole = ntk_zoo.batched(kernel_fn, batch_size=batch, progress=False,
                        checkpoint_dir=ckpt or None)
start = time.perf_counter()
k = whole(x)
wall = time.perf_counter() - start
import resource
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"wall": wall, "blocks": blocks, "method": str(method), "peak_rss_mib": peak,
                  "block_cost": min(costs.values()), "shape": list(k.shape)}))
"""


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


def run_child(family: str, n: int, batch: int, ckpt: str) -> dict:
    """One case in a fresh process; its own max RSS is its peak host memory."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, family, str(n), str(batch), ckpt],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1797)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    peak = matmul_peak()
    print(f"float32 matmul peak: {peak / 1e9:.1f} GFLOP/s\n")
    print(
        "| model | method | n | block | wall s | blocks/s | peak RSS MiB | entries/s | "
        "FLOP rate / matmul peak | with checkpoint_dir: wall s | overhead |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for family in ("mlp", "wrn"):
        plain = run_child(family, args.n, args.batch_size, "")
        with tempfile.TemporaryDirectory() as d:
            ckpt = run_child(family, args.n, args.batch_size, os.path.join(d, "ckpt"))
        rate = plain["block_cost"] * plain["blocks"] / plain["wall"]
        print(
            f"| {family} | {plain['method']} | {args.n} | {args.batch_size} | "
            f"{plain['wall']:.1f} | {plain['blocks'] / plain['wall']:.2f} | "
            f"{plain['peak_rss_mib']:.0f} | {args.n**2 / plain['wall']:.3g} | "
            f"{rate / peak:.2f} | {ckpt['wall']:.1f} | {ckpt['wall'] / plain['wall']:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
