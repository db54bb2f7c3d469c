"""λ_min of a float32 kernel file out of core (shift-invert) against dense ``eigvalsh``.

Run: ``python -m benchmarks.shift_invert_lmin [N]`` (default 4000; a synthetic NTK-shaped
kernel: a separated top, a geometric tail down to 1e-7 of λ_max, rounded to float32), or
``python -m benchmarks.shift_invert_lmin --file kernel.npy`` (an ``(n, n)`` file). Prints the
relative difference, the seconds of the shift-invert and the peak RSS against the kernel's size.
"""

import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def make(size, path):
    """Write the kernel and return the dense λ_min (this process holds N² floats)."""
    rng = np.random.default_rng(0)
    q = np.linalg.qr(rng.standard_normal((size, size)))[0]
    lam = np.r_[1e4, np.geomspace(5e2, 1e-3, size - 1)]
    np.save(path, ((q * lam) @ q.T).astype(np.float32))
    del q
    return float(np.linalg.eigvalsh(np.load(path).astype(np.float64))[0])


def run(path):
    """The out-of-core λ_min in a process that never holds the kernel; its figures.

    Through the public ``spectrum``: one Lanczos pass (``max_passes=1``) then the shift-invert;
    the same call with ``lambda_min="lanczos"`` times what is not the shift-invert.
    """
    import warnings

    from ntk_zoo.spectrum import spectrum

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key)) << 10

    with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM (ru_maxrss survives exec)
        f.write("5")
    before = status("VmRSS:")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one pass leaves λ_max unconverged: not measured here
        start = time.perf_counter()
        s = spectrum(path, dense_limit=0, lambda_min="shift_invert", max_passes=1)
        total = time.perf_counter() - start
        peak = status("VmHWM:")
        start = time.perf_counter()
        spectrum(path, dense_limit=0, lambda_min="lanczos", max_passes=1)
        lanczos = time.perf_counter() - start
    return dict(
        lambda_min=s.lambda_min,
        residual=s.lambda_min_residual,
        shift=s.shift,
        method=s.lambda_min_method,
        total=total,
        step=total - lanczos,
        rss_before=before,
        rss_peak=peak,
    )


def main(argv):
    if argv and argv[0] == "--run":
        print(repr(run(argv[1])))
        return
    if argv and argv[0] == "--file":  # a kernel file of one's own, e.g. a job's kernel.npy
        path = argv[1]
        kernel = np.load(path).astype(np.float64)
        size = kernel.shape[0]
        dense = float(np.linalg.eigvalsh((kernel + kernel.T) / 2)[0])
        del kernel
    else:
        size = int(argv[0]) if argv else 4000
        path = os.path.join(tempfile.mkdtemp(), "kernel.npy")
        dense = make(size, path)
    child = subprocess.run(
        [sys.executable, "-m", "benchmarks.shift_invert_lmin", "--run", path],
        capture_output=True,
        text=True,
        check=True,
    )
    found = eval(child.stdout.strip().splitlines()[-1], {"inf": float("inf")})
    if not (argv and argv[0] == "--file"):
        os.remove(path)
    kernel_bytes = size * size * 4
    print(f"N={size}: kernel {kernel_bytes >> 20} MiB (float32), factor ≈ {4 * size**2 >> 20} MiB")
    print(f"dense eigvalsh lambda_min {dense!r}")
    print(
        f"{found['method']} lambda_min {found['lambda_min']!r}, residual "
        f"{found['residual']:.2g}, shift {found['shift']:.3g}"
    )
    print(f"relative difference {abs(found['lambda_min'] - dense) / abs(dense):.2g}")
    print(
        f"seconds: spectrum(..., lambda_min='shift_invert', max_passes=1) {found['total']:.2f}, "
        f"less the same call with lambda_min='lanczos': {found['step']:.2f}"
    )
    print(
        f"peak RSS {found['rss_peak'] >> 20} MiB, of which {found['rss_before'] >> 20} MiB "
        f"before the call (interpreter, JAX, NumPy, SciPy): added "
        f"{(found['rss_peak'] - found['rss_before']) >> 20} MiB"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
