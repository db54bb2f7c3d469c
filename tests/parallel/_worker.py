"""One process of a multi-process test: ``python _worker.py SCENARIO DIR PROCESS_ID N PORT``.

Started by ``tests/parallel/test_processes.py``, never collected by pytest. It configures its own
JAX (float64, simulated CPU devices), joins the others through ``jax.distributed.initialize`` on
localhost, runs one scenario on the inputs in ``DIR/inputs.npz`` and writes what it got to
``DIR/out_<process>.npz`` (kernels; ``None`` results as absent keys) and ``DIR/out_<process>.json``.
"""

import json
import os
import sys

import jax

SCENARIO, DIR, PROCESS, NUM, PORT = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_num_cpu_devices", int(os.environ.get("NTK_ZOO_TEST_DEVICES", "2")))
jax.config.update("jax_disable_most_optimizations", True)  # short compiles; results exact
if NUM > 1:
    jax.distributed.initialize(
        coordinator_address=f"localhost:{PORT}", num_processes=NUM, process_id=PROCESS
    )

import numpy as np  # noqa: E402

import ntk_zoo  # noqa: E402
from ntk_zoo.parallel import _checkpoint  # noqa: E402
from tests.cases import mlp  # noqa: E402

inputs = dict(np.load(os.path.join(DIR, "inputs.npz")))
X1, X2 = inputs.pop("x1"), inputs.pop("x2")
PARAMS = inputs  # the MLP's params
kernels, info = {}, {"process": PROCESS, "devices": jax.device_count(), "saved": 0}

# Every block this process saves is counted; NTK_ZOO_TEST_EXIT_AFTER=k kills it after k saves.
_save = _checkpoint.BlockStore.save


def counting_save(self, task, leaves):
    if leaves is None:
        _mark(self, [task])
    else:
        _save(self, task, leaves)
    info["saved"] += 1
    if info["saved"] == int(os.environ.get("NTK_ZOO_TEST_EXIT_AFTER", "0")):
        os._exit(17)  # as abrupt as a kill: no cleanup, no collective


_checkpoint.BlockStore.save = counting_save
_mark = _checkpoint.BlockStore.mark


def counting_mark(self, tasks):  # blocks stored in the out file: marked, not saved
    for task in tasks:
        counting_save(self, task, None)


_checkpoint.BlockStore.save = counting_save
_checkpoint.BlockStore.mark = counting_mark


def batched(method, **options):
    kernel_fn = ntk_zoo.ntk_fn(mlp, method=method, vmap_axes=0)
    return ntk_zoo.batched(kernel_fn, batch_size=8, mesh=True, progress=False, **options)


def keep(name, kernel):
    if kernel is not None:
        kernels[name] = np.asarray(kernel)
        info.setdefault("memmaps", {})[name] = isinstance(kernel, np.memmap)


if SCENARIO == "equal":  # every method and gather mode against the one-process kernel
    for method in ("jacobian_contraction", "structured_derivatives"):
        for side, x2 in (("x2=None", None), ("x2", X2)):
            run = batched(method)
            keep(f"{method}/{side}", run(X1, x2, PARAMS))
    info["received"] = {"all": run.stats.received_bytes}  # block bytes from the other process
    run = batched("auto", gather="process0")
    keep("process0", run(X1, X2, PARAMS))
    info["auto"] = [run.stats.method, run.stats.method_source, run.stats.method_times]
    info["received"]["process0"] = run.stats.received_bytes
    run = batched("auto", gather="none", checkpoint_dir=f"{DIR}/ckpt")
    keep("none", run(X1, None, PARAMS))
    info["received"]["none"] = run.stats.received_bytes
    keep("out", batched("auto", out=f"{DIR}/kernel.npy")(X1, None, PARAMS))
    keep("out-none", batched("auto", gather="none", out=f"{DIR}/mine.npy")(X1, X2, PARAMS))
    # Inputs as one global array, each process holding its own rows (fetched whole by batched)
    mesh = jax.make_mesh((jax.device_count(),), ("blocks",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("blocks"))
    mine = X1[18 * PROCESS : 18 * PROCESS + 18]
    x_global = jax.make_array_from_process_local_data(sharding, mine, (36, X1.shape[1]))
    keep("global", batched("auto")(x_global, None, PARAMS))
    # Gradient features of 5 blocks into one shared file: each process writes its share
    features = ntk_zoo.gradient_features(
        mlp, PARAMS, X1, dim=16, key=jax.random.key(3), cotangents="pntk", vmap_axes=0,
        batch_size=8, out=f"{DIR}/features.npy",
    )  # fmt: skip
    keep("features", features)
elif SCENARIO == "resume-file":  # killed after some blocks (by the env var), then rerun
    options = dict(checkpoint_dir=f"{DIR}/ckpt", out=f"{DIR}/kernel.npy")
    keep("kernel", batched("auto", **options)(X1, None, PARAMS))
elif SCENARIO == "memory":  # peak RSS growth of a kernel far bigger than its blocks
    n, block = int(os.environ["NTK_ZOO_TEST_N"]), int(os.environ["NTK_ZOO_TEST_BLOCK"])
    x = np.random.default_rng(0).standard_normal((n, X1.shape[1]))
    kernel_fn = ntk_zoo.ntk_fn(mlp, vmap_axes=0)
    to_file = ntk_zoo.batched(kernel_fn, batch_size=block, progress=False)

    def peak_kib():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

    to_file = ntk_zoo.batched(kernel_fn, batch_size=block, progress=False, out=f"{DIR}/warm.npy")
    to_file(x[: 3 * block], None, PARAMS)  # warm-up: compiles the block program
    before = peak_kib()
    to_file = ntk_zoo.batched(kernel_fn, batch_size=block, progress=False, out=f"{DIR}/big.npy")
    theta = to_file(x, None, PARAMS)
    info["peak_growth_bytes"] = (peak_kib() - before) * 1024
    info["kernel_bytes"] = int(theta.nbytes)
    rows = np.random.default_rng(1).choice(n, 3, replace=False)  # spot check, a few rows
    kernels["rows"] = np.asarray(theta[rows])
    kernels["want"] = np.asarray(kernel_fn(x[rows], x, PARAMS))
else:
    raise SystemExit(f"unknown scenario {SCENARIO!r}")

np.savez(os.path.join(DIR, f"out_{PROCESS}.npz"), **kernels)
with open(os.path.join(DIR, f"out_{PROCESS}.json"), "w") as f:
    json.dump(info, f)
