"""Spectra streamed from a kernel file against the dense eigendecomposition, in float64."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntk_zoo
from ntk_zoo.spectrum import spectrum

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPECTRUM = os.path.join(ROOT, "ntk_zoo", "spectrum")


def mlp(params, x):
    h = jnp.tanh(x @ params["w1"] / np.sqrt(x.shape[-1]))
    return h @ params["w2"] / np.sqrt(h.shape[-1])


def ntk(n, o, trace_axes, seed=0):
    k = jax.random.split(jax.random.key(seed), 3)
    params = {
        "w1": jax.random.normal(k[0], (16, 64), jnp.float64),
        "w2": jax.random.normal(k[1], (64, o), jnp.float64),
    }
    x = jax.random.normal(k[2], (n, 16), jnp.float64)
    kernel_fn = ntk_zoo.ntk_fn(mlp, vmap_axes=0, trace_axes=trace_axes)
    return np.asarray(kernel_fn(x, None, params))


@pytest.fixture(scope="module")
def kernel_file(tmp_path_factory):
    """200 examples, 2 logits averaged (κ ~ 2e3)."""
    path = str(tmp_path_factory.mktemp("streamed") / "kernel.npy")
    np.save(path, ntk(200, 2, (-1,)))
    return path


def test_streamed_matches_dense_before_the_basis_fills_the_space(kernel_file):
    dense = spectrum(np.load(kernel_file))
    # 256 KiB: rows 54 at a time (4 reads a pass), a basis of at most 81 vectors (of 200):
    # λ_max converges; λ_min by Lanczos, at the bottom of a clustered spectrum, is not resolved.
    with pytest.warns(UserWarning, match="lambda_min"):
        streamed = spectrum(
            kernel_file, dense_limit=0, memory_budget=256 << 10, tol=1e-9, lambda_min="lanczos"
        )
    assert streamed.lambda_min_method == "lanczos"
    assert (dense.path, streamed.path) == ("dense", "streamed")
    assert streamed.lambda_min_residual > 0  # the basis did not fill the space
    assert streamed.lambda_max == pytest.approx(dense.lambda_max, rel=1e-9)
    assert streamed.trace == pytest.approx(dense.trace, rel=1e-12)
    # Each residual bounds the distance to an eigenvalue (slack: float64 rounding); by
    # interlacing the smallest Ritz value lies above λ_min.
    slack = 1e-12 * dense.lambda_max
    assert abs(streamed.lambda_max - dense.lambda_max) <= streamed.lambda_max_residual + slack
    assert dense.lambda_min - slack <= streamed.lambda_min
    near = np.abs(dense.eigenvalues - streamed.lambda_min).min()
    assert near <= streamed.lambda_min_residual + slack
    assert streamed.eigenvalues[0] == streamed.lambda_max
    # The effective rank is estimated from 16 probes: within 4 standard errors.
    assert streamed.effective_rank_error > 0
    assert abs(streamed.effective_rank - dense.effective_rank) <= 4 * streamed.effective_rank_error


def test_streamed_matches_dense_once_the_basis_fills_the_space(kernel_file):
    """200 = 13 passes of 16 vectors: Rayleigh–Ritz on the whole space is exact."""
    dense = spectrum(np.load(kernel_file))
    assert spectrum(kernel_file).path == "dense"  # 0.3 MB of float64: under the default limit
    streamed = spectrum(kernel_file, dense_limit=0, memory_budget=2 << 20, tol=1e-9)
    for name in ("lambda_max", "lambda_min", "trace", "condition_number", "effective_rank"):
        assert getattr(streamed, name) == pytest.approx(getattr(dense, name), rel=1e-9), name


def test_full_logit_memmap_exhausts_the_space_exactly(tmp_path):
    kernel = ntk(20, 3, ())  # (20, 20, 3, 3): a 60 × 60 matrix, rows ordered (example, logit)
    path = str(tmp_path / "full.npy")
    np.save(path, kernel)
    dense = spectrum(kernel)
    streamed = spectrum(np.load(path, mmap_mode="r"), dense_limit=0, memory_budget=64 << 10, k=5)
    np.testing.assert_allclose(streamed.eigenvalues, dense.eigenvalues[:5], rtol=1e-10)
    assert streamed.lambda_min == pytest.approx(dense.lambda_min, rel=1e-8)
    assert streamed.effective_rank == pytest.approx(dense.effective_rank, rel=1e-10)
    assert (streamed.lambda_max_residual, streamed.effective_rank_error) == (0.0, 0.0)


def _peak_rss_added(path, call):
    """Peak RSS a child process adds running ``streamed.<call>`` on ``np.load(path, "r")``.

    The child imports ntk_zoo.spectrum's modules without the packages' ``__init__`` (no JAX).
    """
    child = textwrap.dedent(
        f"""
        import sys
        import types

        import numpy as np
        import scipy.linalg  # noqa: F401  (the solver's; its import is not the kernel's memory)

        for name, where in (("ntk_zoo", {ROOT!r}), ("ntk_zoo.spectrum", {SPECTRUM!r})):
            package = types.ModuleType(name)
            package.__path__ = [where]
            sys.modules[name] = package
        from ntk_zoo.spectrum import _streamed as streamed

        def status(key):
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) for l in f if l.startswith(key)) * 1024

        try:  # reset the high-water mark; else count from it (an upper bound)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        before = status("VmRSS:")
        kernel = np.load({path!r}, mmap_mode="r")
        s = streamed.{call}
        print(status("VmHWM:") - before, s["path"], s["lambda_max"], s["lambda_min"])
        """
    )
    # One BLAS thread: on a shared machine OpenBLAS's spinning threads made the shift-invert's
    # products 30× slower (measured at load 6 on 2 cores); memory is what is measured here.
    env = dict(os.environ, PYTHONPATH=ROOT, OPENBLAS_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", child], env=env, capture_output=True, text=True, check=True
    )
    added, path_taken, lmax, lmin = done.stdout.split()
    assert path_taken == "streamed"
    return int(added), float(lmax), float(lmin)


def test_streamed_spectrum_adds_less_memory_than_the_kernel(tmp_path):
    """A child process maps nothing: its peak RSS grows by the budgets, not by the file."""
    n, rank = 3000, 30  # 36 MB of float32
    path = str(tmp_path / "big.npy")
    factor = np.random.default_rng(0).standard_normal((n, rank)).astype(np.float32)
    out = np.lib.format.open_memmap(path, "w+", np.float32, (n, n))
    for s in range(0, n, 500):
        out[s : s + 500] = factor[s : s + 500] @ factor.T
    out[np.arange(n), np.arange(n)] += 1e-2
    out.flush()
    del out
    added, lmax, _ = _peak_rss_added(
        path, "streamed_spectrum(kernel, memory_budget=2 << 20, k=4, lambda_min='lanczos')"
    )
    kernel_bytes = n * n * 4
    # The budgets: 2 MiB of rows (read, cast, products) and 2 MiB of basis, plus the
    # interpreter's own allocations (about 5 MiB measured); loading the kernel would add all of it.
    assert added < kernel_bytes / 2, f"peak RSS grew by {added >> 20} MiB"
    assert lmax > 0
