"""Per-example convolution weight gradients, the dense factor of SD's conv leaves (issue 22;
issues 20, 21), A/B in one process.

``python -m benchmarks.conv_grad micro [O,...] [ROUNDS]`` times, on WRN-16-4's convolution
shapes (N=16, 32×32×3 images; 3×3 stride 1 and 2, 1×1 shortcuts), ``G[n, o] = Σ_p
patch(x_n)[p] ⊗ ct[n, o, p]`` as

* ``transpose``: ``vmap`` over examples and outputs of the convolution's transpose (what SD
  did before, and what Jacobian contraction's VJPs do): XLA:CPU runs grouped convolutions;
* ``per-offset``: one batched ``dot_general`` per filter offset, of the input's strided slice
  and the cotangents (SD's ``_kernel_factor`` with few output columns);
* ``patches``: the stacked patches times the cotangents, one batched ``dot_general`` (SD's
  ``_kernel_factor`` otherwise);

each ending in the kernel's layout ``(N, O, kh, kw, C, F)``, checked equal to ``transpose``.

``python -m benchmarks.conv_grad ab [MODEL] [N] [ROUNDS]`` (default ``wrn-16-4 16 5``) compiles
SD's full kernel (``trace_axes=()``) and pNTK (``cotangents="pntk"``) twice, with the conv rule's
factor (after) and without it (before: ``vmap`` of the transpose), and times them.

Both call in alternating rounds after a warm call and print per variant the median wall and
CPU seconds (``time.process_time``, all threads: steadier than wall on a shared machine) and
the load average before and after. They write nothing; the tables in
``benchmarks/results/features.md`` are copied from the output by hand.
"""

from __future__ import annotations

import itertools
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import ntk_zoo
from benchmarks import bench_models
from ntk_zoo.structured.rules import linear_algebra as _linear_algebra

# (side, c_in, c_out, window, stride): WRN-16-4's convolutions past the stem
SHAPES = [
    (32, 16, 64, 3, 1),
    (32, 64, 64, 3, 1),
    (32, 64, 128, 3, 2),
    (16, 128, 128, 3, 1),
    (16, 128, 256, 3, 2),
    (8, 256, 256, 3, 1),
    (32, 16, 64, 1, 1),
    (32, 64, 128, 1, 2),
]
DN = ("NHWC", "HWIO", "NHWC")


def _pads(h: int, k: int, s: int) -> tuple[int, int]:
    total = max((-(-h // s) - 1) * s + k - h, 0)  # "SAME"
    return total // 2, total - total // 2


def _slices(x, k: int, s: int, out: int) -> list:
    p = _pads(x.shape[1], k, s)
    x = jnp.pad(x, ((0, 0), p, p, (0, 0)))
    n, c = x.shape[0], x.shape[-1]
    last = (out - 1) * s + 1
    return [
        lax.slice(x, (0, a, b, 0), (n, a + last, b + last, c), (1, s, s, 1))
        for a, b in itertools.product(range(k), range(k))
    ]


def transpose(x, ct, k: int, s: int):
    w = jax.ShapeDtypeStruct((k, k, x.shape[-1], ct.shape[-1]), x.dtype)

    def one(xi, cti):  # xi (H, W, C), cti (O, Ho, Wo, F)
        conv = lambda w: lax.conv_general_dilated(xi[None], w, (s, s), "SAME", dimension_numbers=DN)
        t = jax.linear_transpose(conv, w)
        return jax.vmap(lambda c: t(c[None])[0])(cti)

    return jax.vmap(one)(x, ct)


def per_offset(x, ct, k: int, s: int):
    n, o, out, _, f = ct.shape
    c = x.shape[-1]
    g = ct.reshape(n, o, out * out, f)
    parts = [
        lax.dot_general(xs.reshape(n, out * out, c), g, (((1,), (2,)), ((0,), (0,))))
        for xs in _slices(x, k, s, out)
    ]  # each (N, C, O, F)
    r = jnp.stack(parts, axis=1).reshape(n, k, k, c, o, f)
    return jnp.transpose(r, (0, 4, 1, 2, 3, 5))


def patches(x, ct, k: int, s: int):
    n, o, out, _, f = ct.shape
    c = x.shape[-1]
    pt = jnp.stack(_slices(x, k, s, out), axis=-2).reshape(n, out * out, k * k * c)
    g = ct.reshape(n, o, out * out, f)
    r = lax.dot_general(g, pt, (((2,), (1,)), ((0,), (0,))))  # (N, O, F, kkC)
    return jnp.swapaxes(r, -1, -2).reshape(n, o, k, k, c, f)


def _rounds(fns: dict, args: tuple, rounds: int) -> dict:
    for fn in fns.values():
        jax.block_until_ready(fn(*args))
    wall = {name: [] for name in fns}
    cpu = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            jax.block_until_ready(fn(*args))
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    med = statistics.median
    return {name: (med(wall[name]), med(cpu[name])) for name in fns}


def _load() -> str:
    return "load average " + ", ".join(f"{v:.1f}" for v in os.getloadavg())


def micro(outputs: list[int], rounds: int, n: int = 16) -> None:
    print(_load())
    print(
        "| O | conv | GFLOP | transpose ms (wall / CPU) | per-offset | patches "
        "| best vs transpose (CPU) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    rng = np.random.default_rng(0)
    for o in outputs:
        for side, c, f, k, s in SHAPES:
            out = -(-side // s)
            x = jnp.asarray(rng.standard_normal((n, side, side, c)), jnp.float32)
            ct = jnp.asarray(rng.standard_normal((n, o, out, out, f)), jnp.float32)
            fns = {
                name: jax.jit(fn, static_argnums=(2, 3))
                for name, fn in (
                    ("transpose", transpose),
                    ("per-offset", per_offset),
                    ("patches", patches),
                )
            }
            ref = np.asarray(fns["transpose"](x, ct, k, s))
            for name, fn in fns.items():
                got = np.asarray(fn(x, ct, k, s))
                assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max(), name
            t = _rounds(fns, (x, ct, k, s), rounds)
            cell = lambda name, t=t: f"{t[name][0] * 1e3:.1f} / {t[name][1] * 1e3:.1f}"
            best = min(t[name][1] for name in ("per-offset", "patches"))
            gflop = 2 * n * o * out * out * k * k * c * f / 1e9
            print(
                f"| {o} | {side}×{side}×{c}→{f} {k}×{k}/{s} | {gflop:.2f} | {cell('transpose')} "
                f"| {cell('per-offset')} | {cell('patches')} | {t['transpose'][1] / best:.2f}× |",
                flush=True,
            )
    print(_load())


def ab(model: str, n: int, rounds: int) -> None:
    m = bench_models.build(model, o=10, n=n)
    x = jnp.asarray(m.x, jnp.float32)
    real = _linear_algebra._kernel_factor
    fns = {}
    for kind, kw in (("full", {"trace_axes": ()}), ("pntk", {"cotangents": "pntk"})):
        for label, factor in (("before", lambda *a: (None, None)), ("after", real)):
            _linear_algebra._kernel_factor = factor  # read when the rule runs, at trace time
            try:
                fn = ntk_zoo.ntk_fn(m.f, method="structured_derivatives", vmap_axes=0, **kw)
                fns[kind, label] = jax.jit(fn).lower(x, None, m.params).compile()
            finally:
                _linear_algebra._kernel_factor = real
    print(f"{model}, N={n}, O=10, SD; {_load()}")
    for kind in ("full", "pntk"):
        a = np.asarray(fns[kind, "before"](x, None, m.params), np.float64)
        b = np.asarray(fns[kind, "after"](x, None, m.params), np.float64)
        diff = np.abs(a - b).max() / np.abs(a).max()
        print(f"{kind}: after against before, max relative difference {diff:.1e}")
    t = _rounds({k: (lambda f=f: f(x, None, m.params)) for k, f in fns.items()}, (), rounds)
    print(_load())
    print("| kernel | before wall / CPU (s) | after wall / CPU (s) | before / after (wall, CPU) |")
    print("| --- | --- | --- | --- |")
    for kind in ("full", "pntk"):
        (wb, cb), (wa, ca) = t[kind, "before"], t[kind, "after"]
        print(
            f"| {kind} | {wb:.3f} / {cb:.3f} | {wa:.3f} / {ca:.3f} "
            f"| {wb / wa:.2f}×, {cb / ca:.2f}× |"
        )
    for label in ("before", "after"):
        (wp, cp), (wf, cf) = t["pntk", label], t["full", label]
        print(f"pNTK / full {label}: {wp / wf:.3f} (wall), {cp / cf:.3f} (CPU)")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    mode, rest = (argv[0], argv[1:]) if argv else ("micro", [])
    if mode == "micro":
        outputs = [int(v) for v in rest[0].split(",")] if rest else [1, 10]
        micro(outputs, int(rest[1]) if len(rest) > 1 else 5)
    elif mode == "ab":
        model = rest[0] if rest else "wrn-16-4"
        ab(model, int(rest[1]) if len(rest) > 1 else 16, int(rest[2]) if len(rest) > 2 else 5)
    else:
        raise SystemExit(f"mode {mode!r}: use micro or ab")


if __name__ == "__main__":
    main()
