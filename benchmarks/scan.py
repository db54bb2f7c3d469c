"""Layers stacked with ``scan`` against the same layers unrolled, by JC, SD and auto.

    python -m benchmarks scan [--quick] [--repeats 3] [--groups t6-SD,mlp]

**Models** (float32, ``jax.jit(ntk_zoo.ntk_fn(f, method=m, trace_axes=(), vmap_axes=0))``,
full 10×10 logit blocks, N=16):

* a pre-LN transformer in Flax linen: 6 blocks of width 256, MLP 512, 4 heads, on 17 tokens
  of width 256 (random embeddings: no patching), mean-pooled into 10 logits; written four ways
  with the same parameter shapes: a Python loop over the blocks (``loop``), ``nn.remat`` blocks
  (``remat``), blocks under a nested ``nn.jit`` (``jit``) and ``nn.scan`` over the blocks with
  ``variable_axes={"params": 0}`` (``scan``); and at depth 12, ``loop`` and ``scan``;
* a Haiku MLP of 8 residual layers of width 512 on 512 inputs into 10 logits, wrapped by
  ``ntk_zoo.from_haiku``: unrolled, and with ``hk.layer_stack``.

**Groups.** The cases of a group (one method over the ways of one model, or the MLP) run in one
fresh process (``_harness.run_module``): each is compiled ahead of time and called once, then
the cases are called in alternating rounds, so load hits them alike. steady = the median of
``--repeats`` calls; compile = ahead-of-time compile + first call − steady. The ratios
SD-scan / SD-unrolled and JC / SD compare cases of the same and of different groups.

``--quick`` runs two groups at tiny sizes (the transformer of width 32 with 2 blocks on 5
tokens and the MLP of width 64 with 2 layers, N=4; each unrolled and scanned, by every method):
a smoke run of the whole suite, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

from benchmarks import _harness

METHODS = {"JC": "jacobian_contraction", "SD": "structured_derivatives", "auto": "auto"}
WAYS = ("loop", "remat", "jit", "scan")
FULL = {"width": 256, "mlp": 512, "heads": 4, "tokens": 17, "n": 16, "o": 10, "mlp_width": 512}
QUICK = {"width": 32, "mlp": 64, "heads": 2, "tokens": 5, "n": 4, "o": 10, "mlp_width": 64}


def groups(quick: bool) -> dict[str, list[dict]]:
    """Group name -> its cases (``model``, ``way``, ``depth``, ``method``)."""
    if quick:  # two processes: each model unrolled and scanned, by every method
        return {
            "t-quick": [
                {"model": "transformer", "way": w, "depth": 2, "method": m}
                for m in METHODS
                for w in ("loop", "scan")
            ],
            "mlp-quick": [
                {"model": "mlp", "way": w, "depth": 2, "method": m}
                for m in METHODS
                for w in ("loop", "scan")
            ],
        }
    d6, d12, layers = 6, 12, 8
    out = {}
    for short in METHODS:
        out[f"t6-{short}"] = [
            {"model": "transformer", "way": w, "depth": d6, "method": short} for w in WAYS
        ]
    for short in METHODS:
        out[f"t12-{short}"] = [
            {"model": "transformer", "way": w, "depth": d12, "method": short}
            for w in ("loop", "scan")
        ]
    out["mlp"] = [
        {"model": "mlp", "way": w, "depth": layers, "method": short}
        for short in METHODS
        for w in ("loop", "scan")
    ]
    return out


# --- the models (built in the group's process) --------------------------------------------------


def transformer(way: str, depth: int, size: dict):
    """``(f(params, x), params, x)``: the pre-LN transformer written ``way``."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    width, heads = size["width"], size["heads"]

    class Block(nn.Module):
        @nn.compact
        def __call__(self, h):
            y = nn.LayerNorm()(h)
            n, t, d = y.shape
            q, k, v = (nn.Dense(d)(y).reshape(n, t, heads, -1) for _ in range(3))
            s = jnp.einsum("nthd,nshd->nhts", q, k) / jnp.sqrt(q.shape[-1]).astype(y.dtype)
            a = jnp.einsum("nhts,nshd->nthd", jax.nn.softmax(s, -1), v).reshape(n, t, d)
            h = h + nn.Dense(d)(a)
            return h + nn.Dense(d)(jax.nn.gelu(nn.Dense(size["mlp"])(nn.LayerNorm()(h))))

    class Model(nn.Module):
        @nn.compact
        def __call__(self, h):
            if way == "scan":
                body = lambda block, h, _: (block(h), None)
                stack = nn.scan(
                    body, variable_axes={"params": 0}, split_rngs={"params": True}, length=depth
                )
                h, _ = stack(Block(name="blocks"), h, None)
            else:
                cls = {"loop": Block, "remat": nn.remat(Block), "jit": nn.jit(Block)}[way]
                for i in range(depth):
                    h = cls(name=f"block_{i}")(h)
            return nn.Dense(size["o"])(nn.LayerNorm()(h).mean(axis=1))

    x = jax.random.normal(jax.random.key(1), (size["n"], size["tokens"], width))
    model = Model()
    variables = model.init(jax.random.key(0), x[:1])
    return (lambda p, x: model.apply({"params": p}, x)), variables["params"], x


def mlp(way: str, depth: int, size: dict):
    """``(f, params, x)``: the Haiku residual MLP, unrolled or with ``hk.layer_stack``."""
    import haiku as hk
    import jax

    import ntk_zoo

    width = size["mlp_width"]

    def forward(x):
        layer = lambda h: h + jax.nn.relu(hk.Linear(width)(h))
        if way == "scan":
            h = hk.layer_stack(depth)(layer)(x)
        else:
            h = x
            for _ in range(depth):
                h = layer(h)
        return hk.Linear(size["o"])(h)

    transformed = hk.without_apply_rng(hk.transform(forward))
    x = jax.random.normal(jax.random.key(1), (size["n"], width))
    pure = ntk_zoo.from_haiku(transformed, transformed.init(jax.random.key(0), x[:1]))
    return pure.apply, pure.params, x


def run_group(cases: list[dict], quick: bool, repeats: int) -> list[dict]:
    """Compiles every case, then times them in alternating rounds (this process)."""
    import jax
    import jax.numpy as jnp

    import ntk_zoo

    size = QUICK if quick else FULL
    jnp.zeros(()).block_until_ready()
    compiled, results = [], []
    for case in cases:
        build = transformer if case["model"] == "transformer" else mlp
        f, params, x = build(case["way"], case["depth"], size)
        fn = ntk_zoo.ntk_fn(f, method=METHODS[case["method"]], trace_axes=(), vmap_axes=0)
        res = dict(case, status="ok")
        if case["method"] == "auto":
            res["chosen"] = _harness.SHORT.get(str(fn.choose(x, None, params)[0]), "?")
        try:
            start = time.perf_counter()
            call = jax.jit(fn).lower(x, None, params).compile()
            aot = time.perf_counter() - start
            start = time.perf_counter()
            call(x, None, params).block_until_ready()
            res["first_s"] = aot + time.perf_counter() - start
        except Exception as e:  # reported, not fatal: the other cases still run
            res.update(status="error", note=f"{type(e).__name__}: {e}"[:300])
            call = None
        compiled.append((call, params, x))
        results.append(res)
    times = [[] for _ in cases]
    for _ in range(repeats):
        for i, (call, params, x) in enumerate(compiled):
            if call is not None:
                start = time.perf_counter()
                call(x, None, params).block_until_ready()
                times[i].append(time.perf_counter() - start)
    for res, t in zip(results, times):
        if t:
            res["times"] = t
            res["steady_s"] = statistics.median(t)
            res["compile_s"] = max(res["first_s"] - res["steady_s"], 0.0)
    return results


# --- the tables ---------------------------------------------------------------------------------


def _cell(r: dict | None, key: str = "steady_s") -> str:
    if r is None:
        return ""
    if r.get("status") != "ok" or key not in r:
        return r.get("note", "error")[:60]
    return f"{r[key]:.3f}" if r[key] < 10 else f"{r[key]:.1f}"


def report(results: list[dict]) -> None:
    find = lambda model, way, depth, m: next(
        (
            r
            for r in results
            if (r["model"], r["way"], r["depth"], r["method"]) == (model, way, depth, m)
        ),
        None,
    )
    steady = lambda r: None if r is None else r.get("steady_s")
    rows = sorted({(r["model"], r["depth"]) for r in results}, key=lambda k: (k[0] != "t", k))
    print("| model | written as | JC s | SD s | auto s (pick) | JC / SD | SD / SD unrolled |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for model, depth in sorted(rows, key=lambda k: (k[0] == "mlp", k[1])):
        for way in WAYS:
            jc, sd, auto = (find(model, way, depth, m) for m in METHODS)
            if jc is sd is auto is None:
                continue
            base = find(model, "loop", depth, "SD")
            pick = f" ({auto['chosen']})" if auto and "chosen" in auto else ""
            name = f"transformer d={depth}" if model == "transformer" else f"Haiku MLP d={depth}"
            written = {"loop": "unrolled", "scan": "scan"}[way] if model == "mlp" else way
            print(
                f"| {name} | {written} | {_cell(jc)} | {_cell(sd)} | {_cell(auto)}{pick} | "
                f"{_harness.ratio(steady(jc), steady(sd))} | "
                f"{_harness.ratio(steady(sd), steady(base))} |"
            )
    print()
    print("Compile (ahead-of-time compile + first call − steady), seconds:\n")
    print("| model | written as | JC | SD | auto | SD / SD unrolled |")
    print("| --- | --- | --- | --- | --- | --- |")
    for model, depth in sorted(rows, key=lambda k: (k[0] == "mlp", k[1])):
        for way in WAYS:
            jc, sd, auto = (find(model, way, depth, m) for m in METHODS)
            if jc is sd is auto is None:
                continue
            base = find(model, "loop", depth, "SD")
            c = lambda r: None if r is None else r.get("compile_s")
            name = f"transformer d={depth}" if model == "transformer" else f"Haiku MLP d={depth}"
            written = {"loop": "unrolled", "scan": "scan"}[way] if model == "mlp" else way
            print(
                f"| {name} | {written} | {_cell(jc, 'compile_s')} | {_cell(sd, 'compile_s')} | "
                f"{_cell(auto, 'compile_s')} | {_harness.ratio(c(sd), c(base))} |"
            )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks scan", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--repeats", type=int, default=0, help="steady calls (default 3; 2)")
    parser.add_argument("--groups", default="", help="comma-separated group names (all)")
    parser.add_argument("--json", default="", help="raw results, rewritten after each group")
    parser.add_argument("--report", default="", help="only print the tables of a --json file")
    args = parser.parse_args(argv)
    if args.report:
        with open(args.report) as fh:
            report(json.load(fh))
        return
    repeats = args.repeats or (2 if args.quick else 3)
    every = groups(args.quick)
    chosen = [g for g in args.groups.split(",") if g] or list(every)
    unknown = set(chosen) - set(every)
    if unknown:
        raise SystemExit(f"unknown --groups {sorted(unknown)}; choose from {sorted(every)}")
    import jax

    print(
        f"machine: {platform.machine()}, {_cpus()} CPUs; {_harness.python_info()}; "
        f"jax {jax.__version__}; load average at start {_harness.load()}; float32, "
        f"trace_axes=(), vmap_axes=0, jitted; steady = median of {repeats}\n"
    )
    results = []
    for name in chosen:
        start = time.perf_counter()
        flags = ["--quick"] * args.quick + ["--repeats", str(repeats)]
        try:
            reply = _harness.run_module("benchmarks.scan", "--group", name, *flags)
            results += reply["results"]
        except RuntimeError as e:
            print(f"group {name}: failed: {str(e)[-300:]}")
        wall = time.perf_counter() - start
        print(f"group {name}: {wall:.0f} s wall, load {_harness.load()}", flush=True)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(results, fh, indent=1)
    print()
    report(results)


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def _group_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--group", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, required=True)
    args = parser.parse_args(argv)
    import ntk_zoo  # noqa: F401  (first: its XLA:CPU flag before the backend starts)

    cases = groups(args.quick)[args.group]
    _harness.reply(results=run_group(cases, args.quick, args.repeats))


if __name__ == "__main__":
    _group_main(sys.argv[1:])
