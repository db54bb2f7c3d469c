"""The one timing harness of every suite: each measurement in a fresh process.

A kernel case (model, O, N, trace_axes, method, backend) runs in a worker process of its own
(``python -m benchmarks._worker``), so its ``ru_maxrss`` is that case's peak memory. The worker
compiles ahead of time and replies; the harness then times the workers of a group in
alternating rounds (one steady call per worker per round, so machine noise hits all alike) and
takes medians: ``compile_s`` = ahead-of-time compile + first call - steady, ``steady_s`` =
median of the steady calls, ``peak_rss_mib`` / ``base_rss_mib`` = peak and before-compile
resident memory. A watchdog thread polls the resident memory of all live workers and kills the
largest when their sum passes the limit (so a case that would exhaust the shared machine is
reported, not run). Measurements that are not one kernel call (a whole dataset with
``ntk_zoo.batched``) run through :func:`run_module` in a fresh process too.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")  # where BENCHMARKS.md links each suite's output
OURS_PYTHON = sys.executable  # the interpreter running the suite (ntk_zoo's environment)
NT_PYTHON = os.path.join(HERE, ".nt-venv", "bin", "python")  # built by benchmarks/nt_env.sh

SHORT = {
    "jacobian_contraction": "JC",
    "ntk_vector_products": "VP",
    "structured_derivatives": "SD",
    "auto": "auto",
}


def trace_arg(trace_axes: tuple) -> str:
    return ",".join(map(str, trace_axes)) if trace_axes else "none"


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class _Watchdog:
    def __init__(self) -> None:
        self.workers: list[Worker] = []
        self.limit = None
        self.lock = threading.Lock()
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while True:
            time.sleep(0.05)
            with self.lock:
                live = [w for w in self.workers if w.proc.poll() is None]
                self.workers = live
                if not live:
                    continue
                now = time.monotonic()
                for w in live:
                    if w.deadline is not None and now > w.deadline:
                        w.killed = f"killed after {w.timeout_s:.0f} s (--timeout-s)"
                        w.proc.kill()
                if self.limit is None:
                    continue
                rss = {w: _rss_bytes(w.proc.pid) for w in live}
                if sum(rss.values()) > self.limit:
                    worst = max(rss, key=rss.get)
                    worst.killed = (
                        f"killed at {rss[worst] / 2**30:.1f} GiB resident: workers passed the "
                        f"{self.limit / 2**30:.0f} GiB limit (--mem-limit-gib)"
                    )
                    worst.proc.kill()


_WATCHDOG = _Watchdog()


class Worker:
    """One case in a child process; methods return the worker's JSON replies as dicts."""

    def __init__(
        self,
        python: str,
        backend: str,
        model: str,
        o: int,
        n: int,
        trace_axes,
        method,
        widths=(),
        extra=(),
        path: str | None = None,
        timeout_s: float | None = None,
    ):
        self.timeout_s = timeout_s  # the process is killed this long after its start
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.killed = None
        self.failed = None
        self.rates: list[float] = []
        self.stderr = tempfile.TemporaryFile(mode="w+")
        cmd = [python, "-m", "benchmarks._worker", "--backend", backend, "--model", model]
        cmd += ["--o", str(o), "--n", str(n), f"--trace={trace_arg(trace_axes)}"]
        cmd += ["--method", method, *extra]
        if widths:
            cmd += ["--widths", ",".join(map(str, widths))]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
        if path is not None:  # another checkout's ntk_zoo and zoo (see checkout_path)
            env["PYTHONPATH"] = path
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            cwd=ROOT if path is None else path,
            env=env,
        )
        with _WATCHDOG.lock:
            _WATCHDOG.workers.append(self)

    def _recv(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith("@@ "):
                return json.loads(line[3:])
        self.proc.wait()
        if self.killed:
            return {"status": "error", "error": self.killed}
        self.stderr.seek(0)
        tail = self.stderr.read()[-800:]
        return {"status": "error", "error": f"worker exited ({self.proc.returncode}): {tail}"}

    def ready(self) -> dict:
        return self._recv()

    def send(self, cmd: str) -> dict:
        if self.proc.poll() is not None:
            return {"status": "error", "error": self.killed or "worker is not running"}
        try:
            self.proc.stdin.write(cmd + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        return self._recv()

    def quit(self) -> dict:
        r = self.send("quit")
        self.close()
        return r

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stderr.close()


def checkout_path(checkout: str) -> str:
    """A directory to run workers from with another checkout's ``ntk_zoo`` and ``architectures``
    but this checkout's ``benchmarks`` (symbolic links in a temporary directory, which is both
    the worker's working directory and its ``PYTHONPATH``; for ``--baseline``)."""
    checkout = os.path.abspath(checkout)
    for pkg in ("ntk_zoo", "architectures"):
        if not os.path.isdir(os.path.join(checkout, pkg)):
            raise SystemExit(f"--baseline {checkout}: no {pkg}/ there; give a checkout's root.")
    shim = tempfile.mkdtemp(prefix="ntk_zoo-baseline-")
    atexit.register(shutil.rmtree, shim, True)  # removes the links, never what they point to
    os.symlink(os.path.join(checkout, "ntk_zoo"), os.path.join(shim, "ntk_zoo"))
    os.symlink(os.path.join(checkout, "architectures"), os.path.join(shim, "architectures"))
    os.symlink(HERE, os.path.join(shim, "benchmarks"))
    return shim


# What run_group keeps of a worker's ``ready`` reply.
READY_KEYS = (
    "checksum",
    "jax",
    "numpy",
    "library",
    "chosen",
    "description",
    "n_params",
    "build_s",
    "fwd_flops_xla",
    "fwd_flops_jaxpr",
    "matmul_flops_per_s",
    "chunk",
)


def set_mem_limit(gib: float) -> None:
    _WATCHDOG.limit = int(gib * 2**30)


def static_estimate(method: str, n: int, o: int, n_params: int) -> int:
    """Bytes a method needs at least when XLA will not tell (jax 0.4.23 reports zeros on CPU).

    Jacobian contraction holds the ``n·o·p`` per-example Jacobian, and NTK-vector products the
    ``n·o·p`` batch of VJP results it feeds to the JVPs; structured derivatives never form it.
    """
    if method in ("jacobian_contraction", "ntk_vector_products"):
        return 4 * n * o * n_params
    return 0


def too_big(ready: dict, method: str, n: int, o: int, limit_gib: float) -> str | None:
    """Why the case should be skipped (it would not fit), or None."""
    planned = ready.get("planned_bytes") or 0
    source = "XLA plans"
    if planned == 0:
        planned = static_estimate(ready.get("chosen", method), n, o, ready["n_params"])
        source = "needs ≥ 4·N·O·P bytes ="
    if planned > limit_gib * 2**30:
        return f"skipped: {source} {planned / 2**30:.1f} GiB > {limit_gib:.0f} GiB limit"
    return None


def timed_rounds(
    workers: dict, repeats: int, slow_s: float = 5.0, very_slow_s: float = 10.0
) -> dict:
    """Alternating steady calls (one per live worker per round); returns lists of seconds.

    Each round calls every worker once, in order, so machine noise hits all alike. ``repeats``
    drops to 3 when a first call took more than ``slow_s`` seconds, to 2 over ``very_slow_s``.
    """
    times: dict = {k: [] for k in workers}
    for i in range(repeats):
        for key, w in workers.items():
            if w.failed:
                continue
            r = w.send("run")
            if r["status"] != "ok":
                w.failed = r["error"]
                continue
            times[key].append(r["t"])
            if "rate" in r:  # the worker's matmul rate after this call (--floor)
                w.rates.append(r["rate"])
        if repeats > 3 and i >= 2 and any(t and t[0] > slow_s for t in times.values()):
            break
        if repeats > 2 and i >= 1 and any(t and t[0] > very_slow_s for t in times.values()):
            break
    return times


def run_group(
    specs: dict,
    model: str,
    o: int,
    n: int,
    trace_axes,
    repeats: int,
    limit_gib: float,
    kernel_dir: str,
    widths: tuple = (),
    extra: tuple = (),
    timeout_s: float | None = None,
) -> dict:
    """Runs several workers on one case, timing them alternately.

    ``specs`` maps a key to ``(python, backend, method)`` or ``(python, backend, method, path)``
    (``path``: a :func:`checkout_path` to run that worker from); ``extra`` are more worker
    options (``--floor``, ``--chunk K``); a worker still running ``timeout_s`` after its start
    is killed and reported. Workers start (and compile) one after another, then are timed in
    alternating rounds, save their kernels under ``kernel_dir`` and quit. Returns, per key, a
    dict with ``status`` (ok / n/a / skipped / error), ``note``, ``compile_s`` (ahead-of-time
    compile + first call - steady), ``steady_s`` (median), ``times``, ``peak_rss_mib``,
    ``base_rss_mib`` (after imports and inputs, before compiling), ``chosen`` (auto), ``kernel``
    (path of the saved .npy) and the ready reply's :data:`READY_KEYS`.
    """
    out: dict = {}
    workers: dict = {}
    for key, (python, backend, method, *path) in specs.items():
        res = out[key] = {"status": "error", "note": "", "method": method, "backend": backend}
        w = Worker(
            python,
            backend,
            model,
            o,
            n,
            trace_axes,
            method,
            widths,
            extra,
            *(path or [None]),
            timeout_s=timeout_s,
        )
        r = w.ready()
        for k in (*READY_KEYS, "planned_bytes"):
            if k in r:
                res[k] = r[k]
        if r["status"] == "unavailable":
            res.update(status="n/a", note="n/a (not available)")
            w.close()
            continue
        if r["status"] != "ready":
            res["note"] = r["error"].strip().splitlines()[-1][:300] if r["error"] else "error"
            w.close()
            continue
        res["base_rss_mib"] = r["rss_base_mib"]
        reason = too_big(r, method, n, o, limit_gib)
        if reason:
            res.update(status="skipped", note=reason)
            w.close()
            continue
        first = w.send("first")
        if first["status"] != "ok":
            res["note"] = first["error"].strip().splitlines()[-1][:300]
            w.close()
            continue
        res["first_s"] = r["aot_compile_s"] + first["t"]
        workers[key] = w
    times = timed_rounds(workers, repeats)
    for key, w in workers.items():
        res = out[key]
        res["times"] = times[key]
        if w.failed:
            res["note"] = w.failed.strip().splitlines()[-1][:300]
            w.close()
            continue
        res["steady_s"] = median(times[key])
        if w.rates:
            res["matmul_rates"] = w.rates
        res["compile_s"] = max(res["first_s"] - res["steady_s"], 0.0)
        path = os.path.join(kernel_dir, f"{key}.npy".replace("/", "_").replace(" ", "_"))
        if w.send(f"save {path}")["status"] == "ok":
            res["kernel"] = path
        q = w.quit()
        res["peak_rss_mib"] = q.get("peak_rss_mib")
        res["status"] = "ok"
    return out


def rel_err(a_path: str, b_path: str) -> float:
    """max |a - b| / max |b| of two saved kernels (float64 arithmetic)."""
    import numpy as np

    a = np.load(a_path).astype(np.float64)
    b = np.load(b_path).astype(np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def median(values) -> float | None:
    return statistics.median(values) if values else None


def load() -> str:
    """The machine's 1-, 5- and 15-minute load averages (the others sharing its cores)."""
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def python_info() -> str:
    return f"python {sys.version.split()[0]}"


def fmt(v, spec: str) -> str:
    """``v`` formatted, or an empty table cell for ``None``."""
    return "" if v is None else format(v, spec)


def ratio(a, b) -> str:
    return "n/a" if a is None or b is None else f"{a / b:.2f}×"


def run_module(module: str, *args: str) -> dict:
    """``python -m module *args`` in a fresh process; its last ``@@ {json}`` stdout line, with
    ``peak_rss_mib`` (that process's ``ru_maxrss``) added when it does not report one."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
    out = subprocess.run(
        [OURS_PYTHON, "-m", module, *args], capture_output=True, text=True, cwd=ROOT, env=env
    )
    replies = [line[3:] for line in out.stdout.splitlines() if line.startswith("@@ ")]
    if out.returncode != 0 or not replies:
        raise RuntimeError(
            f"{module} {' '.join(args)} failed ({out.returncode}): {out.stderr[-800:]}"
        )
    return json.loads(replies[-1])


def reply(**kw) -> None:
    """One reply of a measured child process to the harness (a ``@@ {json}`` stdout line)."""
    sys.stdout.write("@@ " + json.dumps(kw) + "\n")
    sys.stdout.flush()
