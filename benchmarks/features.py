"""Kernels at scale: the pNTK against the full kernel, projected features against per-example
gradients, and the projected kernel's error against ``dim``.

    python -m benchmarks features [--quick] [--n N] [--repeats R] [--tables ...]

Three tables (issue 22's targets):

1. ``cotangents="pntk"`` by structured derivatives against the full ``(n, n, O, O)`` kernel by
   the same method and against "full kernel, then contract" on the zoo's ViT-S/16 and WRN-16-4
   (10 logits, 32×32×3 images). Target: pNTK ≤ 1.5/O of the full kernel's time, ≥ 5× faster
   than full-then-contract.
2. The relative Frobenius error of ``ΦΦᵀ`` against the exact pNTK for ``dim`` 256 … 16384 on
   an MLP (64-256-256-10, 32 examples), beside the Gaussian prediction ``√(Σ(K_ii K_jj +
   K_ij²))/(‖K‖√dim)``, by the Gaussian and the structured projection. Target: shrinking
   like ``1/√dim``.
3. ``gradient_features(dim=4096, cotangents="pntk", projection="structured")`` on ViT-S/16
   against ``jax.vmap(jax.grad)`` of the same scalar output, in examples per second. Target:
   within 2×.
4. ``"structured"`` against ``"gaussian"`` on a small MLP and ViT (``--projection-models``;
   the dense projection draws ``p·dim`` numbers per call, too many for the zoo models on a
   CPU). Target: structured faster.

All timings in one process, side by side in alternating rounds (medians of ``--repeats``),
after a compile call each; the machine's load is printed with the tables.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import ntk_zoo
from benchmarks import bench_models


def _load() -> str:
    return "load average " + ", ".join(f"{v:.1f}" for v in os.getloadavg())


def _timed(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each function, called in alternating rounds after one warm call."""
    for fn in fns.values():
        jax.block_until_ready(fn())
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def pntk_table(models: list[str], n: int, repeats: int) -> list[str]:
    rows = [
        "| model | params | N | O | full SD (s) | full then contract (s) | pNTK SD (s) "
        "| pNTK / full | target 1.5/O | speed-up vs full-then-contract |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in models:
        model = bench_models.build(name, o=10, n=n)
        f, params, x = model.f, model.params, jnp.asarray(model.x, jnp.float32)
        sd = "structured_derivatives"
        full_fn = jax.jit(ntk_zoo.ntk_fn(f, method=sd, trace_axes=(), vmap_axes=0))
        pntk_fn = jax.jit(ntk_zoo.ntk_fn(f, method=sd, cotangents="pntk", vmap_axes=0))
        contract = jax.jit(lambda k: k.sum((2, 3)) / 10)
        t = _timed(
            {
                "full": lambda full_fn=full_fn, x=x, p=params: full_fn(x, None, p),
                "then": lambda c=contract, full_fn=full_fn, x=x, p=params: c(full_fn(x, None, p)),
                "pntk": lambda pntk_fn=pntk_fn, x=x, p=params: pntk_fn(x, None, p),
            },
            repeats,
        )
        got = np.asarray(pntk_fn(x, None, params))
        want = np.asarray(contract(full_fn(x, None, params)))
        assert np.allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max()), name
        rows.append(
            f"| {name} | {bench_models.n_params(params):,} | {n} | 10 | {t['full']:.3f} | "
            f"{t['then']:.3f} | {t['pntk']:.3f} | {t['pntk'] / t['full']:.3f} | 0.150 | "
            f"{t['then'] / t['pntk']:.1f}× |"
        )
    return rows


def pntk_floor_table(models: list[str], n: int, repeats: int) -> list[str]:
    """What the pNTK cannot go below: one forward pass and one cotangent pass of the pNTK's
    scalar (``jax.grad`` with respect to the inputs: every activation's cotangent, no param
    gradient), beside the full kernel and the pNTK by structured derivatives, timed side by
    side. The pNTK's part that shrinks with ``O`` is its time above ``fwd+bwd``."""
    rows = [
        "| model | N | full SD (s) | pNTK SD (s) | forward (s) | forward + cotangent pass (s) "
        "| pNTK / full | forward / full | (forward + cotangent pass) / full |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    sd = "structured_derivatives"
    for name in models:
        model = bench_models.build(name, o=10, n=n)
        f, params, x = model.f, model.params, jnp.asarray(model.x, jnp.float32)
        full = jax.jit(ntk_zoo.ntk_fn(f, method=sd, trace_axes=(), vmap_axes=0))
        pntk = jax.jit(ntk_zoo.ntk_fn(f, method=sd, cotangents="pntk", vmap_axes=0))
        fwd = jax.jit(f)
        fb = jax.jit(jax.grad(lambda x, p, f=f: f(p, x).sum() / np.sqrt(10)))
        t = _timed(
            {
                "full": lambda full=full, x=x, p=params: full(x, None, p),
                "pntk": lambda pntk=pntk, x=x, p=params: pntk(x, None, p),
                "fwd": lambda fwd=fwd, x=x, p=params: fwd(p, x),
                "fb": lambda fb=fb, x=x, p=params: fb(x, p),
            },
            repeats,
        )
        rows.append(
            f"| {name} | {n} | {t['full']:.3f} | {t['pntk']:.3f} | {t['fwd']:.3f} | "
            f"{t['fb']:.3f} | {t['pntk'] / t['full']:.3f} | {t['fwd'] / t['full']:.3f} | "
            f"{t['fb'] / t['full']:.3f} |"
        )
    return rows


def _model(name: str, n: int):
    """A model of the suite by name; ``mlp-64-256-256`` gives the MLP of those widths."""
    if name.startswith("mlp-"):
        widths = tuple(int(w) for w in name.split("-")[1:])
        return bench_models.build("mlp", o=10, n=n, widths=widths)
    return bench_models.build(name, o=10, n=n)


def features_table(
    models: list[str], n: int, dim: int, repeats: int, projections: tuple[str, ...]
) -> list[str]:
    """Examples per second of ``gradient_features(cotangents="pntk")`` by each projection
    against ``jax.vmap(jax.grad)`` of the same scalar output, timed side by side."""
    rows = [
        "| model | params | N | dim | projection | vmap(grad) (ex/s) | features (ex/s) "
        "| features / vmap(grad) time | target |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    key = jax.random.key(0)
    for name in models:
        model = _model(name, n)
        f, params, x = model.f, model.params, jnp.asarray(model.x, jnp.float32)
        scalar = lambda p, xi, f=f: f(p, xi[None])[0].sum() / np.sqrt(10)  # the pNTK's scalar
        grads = jax.jit(jax.vmap(jax.grad(scalar), in_axes=(None, 0)))
        fns = {"grad": lambda grads=grads, p=params, x=x: grads(p, x)}
        for projection in projections:
            fns[projection] = lambda projection=projection, f=f, p=params, x=x: (
                ntk_zoo.gradient_features(
                    f,
                    p,
                    x,
                    dim=dim,
                    key=key,
                    cotangents="pntk",
                    vmap_axes=0,
                    projection=projection,
                )
            )
        t = _timed(fns, repeats)
        for projection in projections:
            rows.append(
                f"| {name} | {bench_models.n_params(params):,} | {n} | {dim} | {projection} | "
                f"{n / t['grad']:.2f} | {n / t[projection]:.2f} | "
                f"{t[projection] / t['grad']:.2f} | ≤ 2 |"
            )
    return rows


def compile_table(models: list[str], n: int, dim: int) -> list[str]:
    """The first call's cost of ``gradient_features(projection="structured")``, split into
    tracing, ``lower`` and XLA's ``compile`` (with the optimised program's HLO instructions and
    fusions), against ``jax.vmap(jax.grad)``'s ``lower`` + ``compile``."""
    rows = [
        "| model | params | N | dim | trace (s) | lower (s) | compile (s) | HLO ops | fusions "
        "| vmap(grad) lower + compile (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    key = jax.random.key(0)
    for name in models:
        model = _model(name, n)
        f, params, x = model.f, model.params, jnp.asarray(model.x, jnp.float32)
        program = jax.jit(
            lambda p, x, key, f=f: ntk_zoo.gradient_features(
                f, p, x, dim=dim, key=key, cotangents="pntk", vmap_axes=0, projection="structured"
            )
        )
        start = time.perf_counter()
        traced = program.trace(params, x, key)
        traced_at = time.perf_counter()
        lowered = traced.lower()
        lowered_at = time.perf_counter()
        text = lowered.compile().as_text()
        compiled_at = time.perf_counter()
        ops = sum(" = " in line for line in text.splitlines())
        fusions = sum(" fusion(" in line for line in text.splitlines())
        scalar = lambda p, xi, f=f: f(p, xi[None])[0].sum() / np.sqrt(10)
        grads = jax.jit(jax.vmap(jax.grad(scalar), in_axes=(None, 0)))
        grad_start = time.perf_counter()
        grads.lower(params, x).compile()
        grad_time = time.perf_counter() - grad_start
        rows.append(
            f"| {name} | {bench_models.n_params(params):,} | {n} | {dim} | "
            f"{traced_at - start:.1f} | {lowered_at - traced_at:.1f} | "
            f"{compiled_at - lowered_at:.1f} | {ops:,} | {fusions:,} | {grad_time:.1f} |"
        )
    return rows


def error_table(dims: list[int], n: int = 32) -> list[str]:
    model = bench_models.build("mlp", o=10, n=n, widths=(64, 256, 256))
    f, params, x = model.f, model.params, jnp.asarray(model.x, jnp.float32)
    exact = ntk_zoo.ntk_fn(f, cotangents="pntk", vmap_axes=0)(x, None, params)
    rows = [
        "| dim | relative Frobenius error | Gaussian prediction | error·√dim "
        "| structured: error | structured: error·√dim |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for dim in dims:
        phi = ntk_zoo.gradient_features(
            f, params, x, dim=dim, key=jax.random.key(1), cotangents="pntk", vmap_axes=0
        )
        e = ntk_zoo.feature_error(phi, exact)
        phi = ntk_zoo.gradient_features(
            f,
            params,
            x,
            dim=dim,
            key=jax.random.key(1),
            cotangents="pntk",
            vmap_axes=0,
            projection="structured",
        )
        s = ntk_zoo.feature_error(phi, exact).relative_frobenius
        rows.append(
            f"| {dim} | {e.relative_frobenius:.4f} | {e.expected:.4f} | "
            f"{e.relative_frobenius * np.sqrt(dim):.2f} | {s:.4f} | {s * np.sqrt(dim):.2f} |"
        )
    return rows


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m benchmarks features")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--n", type=int, default=4, help="examples for the zoo models")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dim", type=int, default=4096, help="features of tables 3 and 4")
    parser.add_argument("--features-n", type=int, default=8, help="examples of tables 3 and 4")
    parser.add_argument(
        "--tables",
        default="pntk,error,features,projections",
        help="which tables, comma-separated: pntk, error, features (structured against "
        "vmap(grad) on the first zoo model), projections (structured against gaussian on "
        "--projection-models), compile (the structured program's trace / lower / compile "
        "split on --features-models), floor (the pNTK beside one forward and one cotangent "
        "pass); the last two not in the default set",
    )
    parser.add_argument(
        "--features-models", default="", help="models of the features table (default: ViT-S/16)"
    )
    parser.add_argument(
        "--projection-models",
        default="mlp-64-256-256,vit",
        help="models of the structured-against-gaussian table (a dense projection of every "
        "param: keep them small)",
    )
    args = parser.parse_args(argv)
    tables = set(args.tables.split(","))
    if args.quick:
        models, n, dim, dims = ["vit"], 2, 256, [256, 1024]
    else:
        models, n, dim = ["vit-S/16", "wrn-16-4"], args.n, args.dim
        dims = [256, 1024, 4096, 16384]
    n_features = n if args.quick else args.features_n
    feature_models = args.features_models.split(",") if args.features_models else models[:1]
    lines: list[str] = []

    def emit(*new: str) -> None:  # each table as soon as it is measured
        lines.extend(new)
        print("\n".join(new), flush=True)

    emit(f"backend {jax.default_backend()}, jax {jax.__version__}; {_load()} (before)", "")
    if "pntk" in tables:
        emit("### pNTK against the full kernel (structured derivatives)", "")
        emit(*pntk_table(models, n, args.repeats), "", f"{_load()}", "")
    if "floor" in tables:
        emit("### The pNTK's floor: one forward and one cotangent pass", "")
        emit(*pntk_floor_table(models, n, args.repeats), "", f"{_load()}", "")
    if "error" in tables:
        emit("### Projected pNTK error against dim (MLP, 32 examples)", "")
        emit(*error_table(dims), "", f"{_load()}", "")
    if "features" in tables:
        emit("### gradient_features (structured) against per-example gradients", "")
        emit(
            *features_table(feature_models, n_features, dim, args.repeats, ("structured",)),
            "",
            f"{_load()}",
            "",
        )
    if "compile" in tables:
        emit("### gradient_features (structured): the first call's compile split", "")
        emit(*compile_table(feature_models, n_features, dim), "", f"{_load()}", "")
    if "projections" in tables:
        emit("### structured against gaussian projections", "")
        projection_models = args.projection_models.split(",")
        emit(
            *features_table(
                projection_models, n_features, dim, args.repeats, ("structured", "gaussian")
            ),
            "",
            f"{_load()} (after)",
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
