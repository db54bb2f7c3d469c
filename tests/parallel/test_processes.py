"""`batched` over several real processes (jax.distributed on localhost), into files, across kills.

Each test starts its own processes (``tests/parallel/_worker.py``): 2 processes × 2 simulated CPU
devices, joined by ``jax.distributed.initialize`` on a free localhost port, exactly as the
README's multi-host example runs them. Cases share launches: starting a process, importing JAX
and compiling cost more than the kernels.
"""

import glob
import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np

import ntk_zoo
from tests.cases import CASES, mlp
from tests.oracle import rel_error
from tests.parallel._counting import count_blocks_computed

EXACT = 1e-12  # the same blocks computed by other processes: only summation order may differ
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = os.path.join(ROOT, "tests", "parallel", "_worker.py")
PARAMS = next(c for c in CASES if c.name == "mlp").params
RNG = np.random.default_rng(0)
X1, X2 = RNG.standard_normal((37, 4)), RNG.standard_normal((23, 4))  # block 8 divides neither


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(command, n: int, directory, env=None) -> list[int]:
    """Starts processes ``command(0)`` .. ``command(n - 1)``; waits; returns their exit codes.

    No wall-clock limit: a process whose peer dies is ended by ``jax.distributed``'s own failure
    detection (the resume test relies on it), and CI bounds the whole run.
    """
    env = {**os.environ, **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    # The children compile as this process does (tests/conftest.py's XLA flags: kernels compared
    # bitwise) and choose their own devices.
    flags = env.get("XLA_FLAGS", "").split()
    env["XLA_FLAGS"] = " ".join(f for f in flags if "host_platform_device_count" not in f)
    logs = [open(directory / f"log_{i}.txt", "w") for i in range(n)]
    procs = [
        subprocess.Popen(command(i), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        for i, log in enumerate(logs)
    ]
    try:
        return [p.wait() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:  # interrupted (Ctrl-C): leave no process behind
                p.kill()
                p.wait()
        for log in logs:
            log.close()


def _logs(directory, n: int) -> str:
    return "\n".join((directory / f"log_{i}.txt").read_text()[-3000:] for i in range(n))


def run_worker(scenario: str, directory, n: int = 2, env=None) -> list[int]:
    if not (directory / "inputs.npz").exists():
        np.savez(directory / "inputs.npz", x1=X1, x2=X2, **PARAMS)
    port = str(free_port())
    command = lambda i: [sys.executable, WORKER, scenario, str(directory), str(i), str(n), port]
    return launch(command, n, directory, env)


def results(directory, n: int = 2) -> list[tuple[dict, dict]]:
    out = []
    for i in range(n):
        with np.load(directory / f"out_{i}.npz") as f:
            kernels = dict(f)
        out.append((kernels, json.loads((directory / f"out_{i}.json").read_text())))
    return out


def reference(x2, method="jacobian_contraction"):
    return np.asarray(ntk_zoo.ntk_fn(mlp, method=method, vmap_axes=0)(X1, x2, PARAMS))


def test_two_processes_equal_one(tmp_path, monkeypatch):
    """Every process's kernel is the one-process kernel, for each method and gather mode; blocks
    saved by 2 processes are reused by 1; `out` files written by 2 processes are the kernel."""
    codes = run_worker("equal", tmp_path)
    assert codes == [0, 0], _logs(tmp_path, 2)
    (k0, info0), (k1, info1) = results(tmp_path)
    assert info0["devices"] == info1["devices"] == 4
    for method in ("jacobian_contraction", "structured_derivatives"):
        for side, x2 in (("x2=None", None), ("x2", X2)):
            want = reference(x2, method)
            for kernels in (k0, k1):
                assert rel_error(kernels[f"{method}/{side}"], want) <= EXACT, (method, side)
    assert rel_error(k0["process0"], reference(X2)) <= EXACT
    assert "process0" not in k1  # gather="process0": the others get None
    # ... and receive no block: process 1's 7 of the 15 blocks of 8 × 8 float64 (its 2 of 4
    # devices, rounds of 4 blocks) travel to process 0 only; "all" sends to both, "none" to none.
    assert info0["received"]["process0"] == 7 * 8 * 8 * 8 and info1["received"]["process0"] == 0
    assert info0["received"]["all"] > 0 and info1["received"]["all"] > 0
    assert info0["received"]["none"] == info1["received"]["none"] == 0
    # auto's block method: process 0 measured (or read its wisdom), process 1 followed it.
    assert info0["auto"][:2] == info1["auto"][:2] and info0["auto"][1] in ("measured", "wisdom")
    assert info1["auto"][2] == {}
    assert "none" not in k0 and "none" not in k1  # gather="none": nobody assembles
    for kernels, info in ((k0, info0), (k1, info1)):  # out=: a memmap on every process
        assert info["memmaps"]["out"] and rel_error(kernels["out"], reference(None)) <= EXACT
    assert "out-none" not in k0 and "out-none" not in k1
    for kernels in (k0, k1):  # inputs given as a global array spread over the processes
        assert rel_error(kernels["global"], reference(None)[:36, :36]) <= EXACT
    written = np.load(tmp_path / "mine.npy")  # each process wrote its own blocks into it
    assert rel_error(written, reference(X2)) <= EXACT
    # Gradient features written by 2 processes into one file: each process recorded its own
    # blocks (3 and 2 of 5), every process returned the whole file, equal to one process's
    # features in memory; one process resuming that file computes nothing.
    features = lambda **kw: ntk_zoo.gradient_features(
        mlp, PARAMS, X1, dim=16, key=jax.random.key(3), cotangents="pntk", vmap_axes=0,
        batch_size=8, **kw,
    )  # fmt: skip
    want = np.asarray(features())
    for kernels in (k0, k1):
        assert rel_error(kernels["features"], want) <= EXACT
    path = str(tmp_path / "features.npy")
    records_of = (".blocks.json", ".blocks.1.json")  # process 0's, process 1's
    records = [json.loads(pathlib.Path(path + r).read_text()) for r in records_of]
    assert [r["done"] for r in records] == [[0, 2, 4], [1, 3]]
    written = os.stat(path).st_mtime_ns
    assert rel_error(np.asarray(features(out=path)), want) <= EXACT
    assert os.stat(path).st_mtime_ns == written  # no block computed again
    # The blocks saved by 2 processes (gather="none"), reused by this single process: none
    # computed again, whatever the devices.
    assert info0["saved"] + info1["saved"] == 5 * 6 // 2
    computed = count_blocks_computed(monkeypatch)
    kernel_fn = ntk_zoo.ntk_fn(mlp, method="auto", vmap_axes=0)
    again = ntk_zoo.batched(
        kernel_fn, batch_size=8, progress=False, checkpoint_dir=str(tmp_path / "ckpt")
    )(X1, None, PARAMS)
    assert not computed
    assert rel_error(again, reference(None)) <= EXACT


def test_killed_processes_resume_with_another_process_count(tmp_path):
    """Two processes die abruptly mid-run writing `out` (the file is the checkpoint); one
    process finishes it, computing exactly the unmarked blocks; the file is bitwise the
    one-process kernel."""
    codes = run_worker("resume-file", tmp_path, env={"NTK_ZOO_TEST_EXIT_AFTER": "2"})
    # Process 0 writes the file and marks a round's blocks (4) at once: it exits (17) once it
    # has marked 2; its peer is aborted by jax.distributed when the coordinator goes away.
    assert 17 in codes and 0 not in codes, _logs(tmp_path, 2)
    marked = sorted(p.name for p in (tmp_path / "ckpt").glob("done_*"))
    assert 2 <= len(marked) < 15 and not list((tmp_path / "ckpt").glob("block_*"))
    assert run_worker("resume-file", tmp_path, n=1) == [0], _logs(tmp_path, 1)
    [(kernels, info)] = results(tmp_path, 1)
    assert info["saved"] == 15 - len(marked)  # no marked block computed again
    written = np.load(tmp_path / "kernel.npy")
    np.testing.assert_array_equal(written, kernels["kernel"])
    # Bitwise the kernel of one process on two devices, as each process of the killed run had.
    kernel_fn = ntk_zoo.ntk_fn(mlp, method="auto", vmap_axes=0)
    mesh = jax.make_mesh((2,), ("blocks",), devices=jax.devices()[:2])
    one = ntk_zoo.batched(kernel_fn, batch_size=8, mesh=mesh, progress=False)(X1, None, PARAMS)
    np.testing.assert_array_equal(written, one)


def test_kernel_file_memory_stays_bounded(tmp_path):
    """A kernel many times its block: writing it to `out=` grows the peak RSS far less."""
    env = {"NTK_ZOO_TEST_N": "4000", "NTK_ZOO_TEST_BLOCK": "250", "NTK_ZOO_TEST_DEVICES": "1"}
    assert run_worker("memory", tmp_path, n=1, env=env) == [0], _logs(tmp_path, 1)
    [(kernels, info)] = results(tmp_path, 1)
    assert info["kernel_bytes"] == 4000 * 4000 * 8
    print(
        f"peak RSS growth {info['peak_growth_bytes'] / 2**20:.1f} MiB for a "
        f"{info['kernel_bytes'] / 2**20:.0f} MiB kernel"
    )
    # Holding the kernel would grow the peak by its whole size; streaming grows it by a few
    # blocks plus the pages of the file still resident after writes (16.6 MiB measured in CI,
    # above the 15.3 MiB of an eighth): a quarter separates the two cases with room to spare.
    assert info["peak_growth_bytes"] < info["kernel_bytes"] / 4
    assert rel_error(kernels["rows"], kernels["want"]) <= EXACT


def test_command_line_over_two_processes(tmp_path):
    """`ntk-zoo run` on 2 processes: both compute, process 0 alone writes the workdir."""
    workdir = tmp_path / "run"
    port = str(free_port())
    command = lambda i: [
        sys.executable,
        "-m",
        "ntk_zoo",
        "run",
        "--config",
        "configs/mlp.py:runlocal",
        "--workdir",
        str(workdir),
        "--noprogress",
        "--config.ntk.batch_size=4",
        "--config.ntk.method=jacobian_contraction",  # quickest to compile
        "--config.ntk.per_layer=False",
        "--config.ntk.out=kernel.npy",
        f"--config.ntk.distributed.coordinator_address=localhost:{port}",
        "--config.ntk.distributed.num_processes=2",
        f"--config.ntk.distributed.process_id={i}",
    ]
    assert launch(command, 2, tmp_path) == [0, 0], _logs(tmp_path, 2)
    assert sorted(p.name for p in workdir.iterdir()) == [
        "kernel.npy",
        "kernel.npz",
        "report.json",
        "spectrum.png",
    ]
    report = json.loads((workdir / "report.json").read_text())
    assert report["processes"] == 2 and report["kernel_shape"] == [16, 16]
    kernel = np.load(workdir / "kernel.npy")
    np.testing.assert_allclose(kernel, kernel.T, rtol=1e-6)  # both halves of the blocks met
    assert "wrote kernel.npy, kernel.npz, report.json, spectrum.png" in _logs(tmp_path, 1)[:3000]
    assert "process 1 computed its share" in (tmp_path / "log_1.txt").read_text()


def readme_block(marker: str) -> str:
    """The block after ``<!-- multihost-example: marker -->`` in README.md or a docs/ page."""
    tag = f"<!-- multihost-example: {marker} -->"
    pages = [
        os.path.join(ROOT, "README.md"),
        *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))),
    ]
    text = next(t for t in (pathlib.Path(p).read_text() for p in pages) if tag in t)
    after = text[text.index(tag) :]
    return after.split("```", 2)[1].split("\n", 1)[1]


def test_readme_example_runs_as_written(tmp_path):
    """The README's two-process example, run by its own bash line (on a free port)."""
    (tmp_path / "kernel.py").write_text(
        readme_block("kernel.py").replace("localhost:12355", f"localhost:{free_port()}")
    )
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    done = subprocess.run(
        ["bash", "-c", readme_block("bash")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    # process 0 prints "0 (70, 70)", process 1 "1 None" (their lines may interleave)
    assert done.stdout.count("(70, 70)") == 1 and done.stdout.count("None") == 1, (
        done.stdout + done.stderr
    )
    x, _ = ntk_zoo.data.load_digits(70)  # float32, as in the example
    f = lambda p, x: jax.numpy.tanh(x @ p["w"])
    want = ntk_zoo.ntk_fn(f, vmap_axes=0)(x, None, {"w": np.ones((64, 10), np.float32) / 8})
    assert rel_error(np.load(tmp_path / "runs" / "kernel-2p.npy"), want) <= 1e-6  # float32
