"""``ntk_zoo.calibrate()``: measure this machine's :class:`ntk_zoo.core.CostTable` for ``auto``."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from ntk_zoo.core import CostTable, cache_path, use_table

# Small batched contractions (batch, m, k, n) with output tiles m·n below core.SMALL_TILE, the
# sizes of structured derivatives' per-use einsums and of Jacobian contractions over few examples.
_EINSUMS = (
    (4096, 8, 8, 8),
    (1024, 16, 16, 16),
    (2048, 8, 64, 8),
    (512, 16, 64, 16),
    (256, 8, 256, 8),
)
_CHAIN = 256  # dependent tiny steps timed for the fixed cost of one step


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(backend: str) -> dict:
    """What a table was measured on: CPU model, cores, device, jax / jaxlib versions, date, and
    the load average over the last minute (other processes share the machine's time)."""
    import jaxlib

    device = jax.devices(backend)[0]
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "device": f"{device.platform}: {device.device_kind}",
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%MZ"),
        "load_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def _seconds(fn: Callable, args: tuple, budget_s: float) -> float:
    """Median seconds of one call of the jitted ``fn(*args)`` (compiled and warmed first)."""
    jitted = jax.jit(fn)
    jax.block_until_ready(jitted(*args))
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or (len(times) < 25 and time.perf_counter() - start < budget_s):
        t = time.perf_counter()
        jax.block_until_ready(jitted(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _matmul_rate(device, scale: int, budget_s: float) -> float:
    n = 1024 // scale if device.platform == "cpu" else 4096 // scale
    a = jax.device_put(jnp.ones((n, n), jnp.float32), device)
    t_mm = _seconds(lambda a: (a @ a) * (1.0 / n), (a,), budget_s / 2)
    c, hw = 64 // scale, 32
    x = jax.device_put(jnp.ones((8, c, hw, hw), jnp.float32), device)
    w = jax.device_put(jnp.ones((c, c, 3, 3), jnp.float32), device)
    conv = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME")
    t_conv = _seconds(conv, (x, w), budget_s / 2)
    return (2.0 * n**3 + 2.0 * 8 * c * c * 9 * hw * hw) / (t_mm + t_conv)


# Per-example convolution weight gradients (examples, side, channels in, out, outputs): the
# Jacobians of a conv layer's kernel as Jacobian contraction builds them (a VJP per output
# under ``vmap`` over examples), which XLA runs as grouped convolutions.
_CONV_GRADS = ((8, 16, 16, 32, 8), (8, 8, 32, 64, 8), (4, 16, 3, 16, 8))


def _conv_grad_rate(device, scale: int, budget_s: float) -> float:
    flops = seconds = 0.0
    dims = ("NHWC", "HWIO", "NHWC")
    for n, side, c_in, c_out, o in _CONV_GRADS:
        n, side = max(1, n // scale), max(4, side // max(1, scale // 2))
        x = jax.device_put(jnp.ones((n, side, side, c_in), jnp.float32), device)
        w = jax.device_put(jnp.ones((3, 3, c_in, c_out), jnp.float32), device)
        g = jax.device_put(jnp.ones((n, o, side, side, c_out), jnp.float32), device)
        conv = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dims)

        def grads(x, w, g, conv=conv):
            def example(xi, gi):
                _, vjp = jax.vjp(lambda w: conv(xi[None], w)[0], w)
                return jax.vmap(lambda cotangent: vjp(cotangent)[0])(gi)

            return jax.vmap(example)(x, g)

        seconds += _seconds(grads, (x, w, g), budget_s / len(_CONV_GRADS))
        flops += 2.0 * n * o * side * side * c_out * c_in * 9
    return flops / seconds


def _einsum_rate(device, scale: int, budget_s: float) -> float:
    flops = seconds = 0.0
    for b, m, k, n in _EINSUMS:
        b = max(1, b // scale)
        x = jax.device_put(jnp.ones((b, m, k), jnp.float32), device)
        y = jax.device_put(jnp.ones((b, k, n), jnp.float32), device)
        seconds += _seconds(lambda x, y: jnp.einsum("bmk,bkn->bmn", x, y), (x, y), budget_s / 5)
        flops += 2.0 * b * m * k * n
    return flops / seconds


def _memory_rate(device, scale: int, budget_s: float) -> float:
    moved = seconds = 0.0
    for size in (1 << 20, 1 << 22, 1 << 24):  # 4 MiB to 64 MiB, the sizes of intermediates
        x = jax.device_put(jnp.ones(size // scale**2, jnp.float32), device)
        seconds += _seconds(lambda x: x * 2.0 + 1.0, (x,), budget_s / 4)
        moved += 2.0 * x.nbytes
    side = 2048 // scale
    y = jax.device_put(jnp.ones((side, side), jnp.float32), device)
    seconds += _seconds(lambda y: y.T + 1.0, (y,), budget_s / 4)
    return (moved + 2.0 * y.nbytes) / seconds


def _overhead(device, scale: int, budget_s: float) -> float:
    steps = _CHAIN // scale
    w = jax.device_put(jnp.eye(8, dtype=jnp.float32), device)

    def chain(x, w):
        for _ in range(steps):  # dependent tiny products: nothing to fuse or overlap
            x = x @ w
        return x

    return _seconds(chain, (w, w), budget_s) / steps


def calibrate(
    backend: str | None = None, *, budget_s: float = 20.0, save: bool = True
) -> CostTable:
    """Measures this machine's speed per kind of step, the table ``method="auto"`` ranks by.

    ``auto`` estimates each method as a sum of steps, each taking
    ``steps · overhead + max(flops / rate[kind], bytes / memory_bytes)`` seconds. This measures,
    with jitted float32 programs on one device of ``backend``:

    * ``matmul_flops``: a square matrix product and a 3×3 convolution, ``Σ flops / Σ seconds``;
    * ``einsum_flops``: batched ``(b, m, k) × (b, k, n)`` products with small output tiles
      (``m·n`` of 64 to 256), the sizes of the per-use einsums of structured derivatives;
    * ``memory_bytes``: an elementwise pass and a transpose, ``Σ bytes read and written / Σ s``;
    * ``overhead_s``: a chain of dependent ``8×8`` products, seconds per product;
    * ``conv_grad_flops``: per-example weight gradients of 3×3 convolutions (a VJP per output
      under ``vmap`` over examples, as Jacobian contraction builds a conv layer's Jacobians).

    Each is the median of repeated calls after one warm-up call. With ``save`` the table is
    written to the user cache (``ntk_zoo.core.cache_path(backend)``: ``$NTK_ZOO_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/ntk_zoo``, else ``~/.cache/ntk_zoo``) and ``auto`` uses it from then
    on, in this process and later ones. Under 30 s with the default budget (compiling
    included); ``budget_s`` below 5 measures at smaller sizes (a rough table, in a second or two).

    Args:
      backend: ``"cpu"``, ``"gpu"``, ...; default ``jax.default_backend()``.
      budget_s: about how many seconds of timed calls to spend in all.
      save: write the table to the cache and make it the active one.

    Returns:
      The measured :class:`ntk_zoo.core.CostTable` (``source="measured"``, with the machine).

    Example:
      >>> import ntk_zoo
      >>> table = ntk_zoo.calibrate("cpu", budget_s=0.5, save=False)  # a rough, quick table
      >>> table.backend, table.source, table.matmul_flops > 0, table.overhead_s >= 0
      ('cpu', 'measured', True, True)
    """
    if budget_s <= 0:
        raise ValueError(f"budget_s={budget_s!r} must be positive (seconds of timed calls).")
    backend = jax.default_backend() if backend is None else backend
    try:
        device = jax.devices(backend)[0]
    except RuntimeError as e:
        raise ValueError(f"backend={backend!r} is not available here ({e}).") from None
    scale = 1 if budget_s >= 5 else 4
    share = budget_s / 5
    table = CostTable(
        backend,
        matmul_flops=_matmul_rate(device, scale, share),
        einsum_flops=_einsum_rate(device, scale, share),
        memory_bytes=_memory_rate(device, scale, share),
        overhead_s=max(0.0, _overhead(device, scale, share)),
        source="measured",
        machine=machine_info(backend),
        conv_grad_flops=_conv_grad_rate(device, scale, share),
    )
    if save:
        path = cache_path(backend)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(table.to_json(), indent=1))
        tmp.replace(path)
        use_table(table)
    return table
