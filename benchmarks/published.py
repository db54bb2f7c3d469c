"""Published model sizes against the FLOP floor: WRN-28-10, ViT-B/16, a 1000-logit ResNet-18.

    python -m benchmarks published-sizes [--models wrn,vit,resnet] [--methods SD,auto,JC,VP]
                                         [--repeats 2] [--quick] [--mem-limit-gib 16]
                                         [--json out.json]

Cases (float32, ``trace_axes=()``: full O×O logit blocks, kernel of ``x`` with itself,
``vmap_axes=0``, jitted):

* ``wrn``: the zoo's WRN-28-10 (``architectures.build``, Flax linen, 36.5M params) on
  32×32×3 images, N=8, O=10;
* ``vit``: the zoo's ViT-B/16 (86M params) on 224×224×3 images (196 patches + class token),
  N=4, O=10;
* ``resnet``: a ResNet-18 of the ImageNet layout (benchmarks/bench_models.py, plain JAX, 11.69M
  params) with **1000 logits**, N=4, on 32×32×3 images (CIFAR-sized rather than 224×224: the
  kernel's 4·4·1000·1000 entries need ~4000 cotangent passes, which at 224×224 would take hours
  on a CPU; the stem and pool bring 32×32 to 8×8 before the first stage) — the case where only
  structured derivatives fit: the per-example Jacobian of JC and VP is N·O·P·4 bytes = 187 GB.

``--quick`` (a smoke run of every code path in about two minutes): WRN-10-2 on 16×16×3, N=2;
ViT-test/8 on 32×32×3, N=2; the ResNet-18 on 16×16×3 with 100 logits, N=2. ``--chunk K``
computes SD and ``auto`` through ``ntk_zoo.batched(..., output_chunk=K)`` from the start.

**Each method in its own process** (benchmarks/_harness.py, one after another): JC, VP, SD
and ``auto`` (names: ``--methods``, short or long). Reported per method:

* build s: the model's construction and initialisation in that process (after the backend
  started; the zoo's ``architectures.build``, as the command line calls it);
* compile s: ahead-of-time ``lower().compile()`` + first call − steady;
* steady s: median of ``--repeats`` further calls (each call of the published sizes takes
  10–60 s on 2 cores);
* peak MiB: the process's ``ru_maxrss``; planned GiB: XLA's memory plan of the compiled kernel;
* the FLOP floor: forward FLOPs of ``jax.jit(f)`` on the batch from XLA's cost analysis
  (``fwd GFLOP``; ntk_zoo's own count of the traced program beside it) × (1 + O) — one forward
  pass and one cotangent pass per logit, a lower bound for any exact method — at the float32
  matmul rate measured in the same process (2048² matmul, best of 3, right after each steady
  call, median over the calls: the load the calls saw; the machine is shared); ``of floor`` =
  floor time / steady time (1.0: at the floor).

A method whose compiled program would not fit ``--mem-limit-gib`` (default 16 GiB, the issue's
bound) is skipped and says so; SD and ``auto`` are then rerun through ``ntk_zoo.batched`` with
an ``output_chunk`` of the logits sized from XLA's plan (compiled on the first call, so their
compile time is the first call − steady), and the row says which chunk.

Time (2-core CPU): all methods about 30 min (VP on WRN-28-10 and ViT-B/16 takes minutes per
call); ``--methods SD,auto`` about 12 min; ``--quick`` about 2 min.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from typing import NamedTuple

from benchmarks import _harness
from benchmarks._harness import SHORT, fmt

LONG = {v: k for k, v in SHORT.items()}
ALL_METHODS = ("structured_derivatives", "auto", "jacobian_contraction", "ntk_vector_products")


class Case(NamedTuple):
    key: str
    model: str
    o: int
    n: int
    widths: tuple
    title: str


CASES = (
    Case("wrn", "wrn-28-10", 10, 8, (32,), "WRN-28-10, 32×32×3"),
    Case("vit", "vit-B/16", 10, 4, (224,), "ViT-B/16, 224×224×3"),
    Case("resnet", "resnet18", 1000, 4, (32,), "ResNet-18, 32×32×3"),
)
QUICK = (
    Case("wrn", "wrn-10-2", 10, 2, (16,), "WRN-10-2, 16×16×3 (quick)"),
    Case("vit", "vit-test/8", 10, 2, (32,), "ViT-test/8, 32×32×3 (quick)"),
    Case("resnet", "resnet18", 100, 2, (16,), "ResNet-18, 16×16×3, 100 logits (quick)"),
)


def method_names(spec: str) -> list[str]:
    names = []
    for name in spec.split(","):
        name = LONG.get(name.strip(), name.strip())
        if name not in ALL_METHODS:
            raise SystemExit(f"--methods: unknown {name!r}; use {', '.join(SHORT.values())}")
        names.append(name)
    return names


def matmul_rate(r: dict) -> float | None:
    """The matmul rate of the method's process: the median of those measured right after each
    steady call (the load the calls saw), else the one measured at start."""
    rates = r.get("matmul_rates")
    return _harness.median(rates) if rates else r.get("matmul_flops_per_s")


def floor_s(r: dict, o: int) -> float | None:
    """The FLOP floor's time: forward FLOPs on the batch × (1 + O) / the matmul rate."""
    flops = r.get("fwd_flops_xla") or r.get("fwd_flops_jaxpr")
    rate = matmul_rate(r)
    return None if not flops or not rate else flops * (1 + o) / rate


def param_count(case: Case) -> int:
    """The model's parameters from shapes alone (no initialisation, no JAX computation)."""
    from benchmarks import bench_models

    config = bench_models.zoo_config(case.model, case.o)
    if config is not None:
        import architectures

        return architectures.param_count(config, (case.widths[0], case.widths[0], 3))
    return bench_models.n_params(bench_models.build(case.model, o=case.o, n=1).params)


def run_method(
    case: Case,
    method: str,
    repeats: int,
    limit: float,
    kdir: str,
    chunk: int = 0,
    timeout_s: float | None = None,
) -> dict:
    spec = {method: (_harness.OURS_PYTHON, "ours", method)}
    if method in ("jacobian_contraction", "ntk_vector_products"):
        # Not even compiled when the N·O·P per-example Jacobian alone passes the limit.
        p = param_count(case)
        need = _harness.static_estimate(method, case.n, case.o, p)
        if need > limit * 2**30:
            note = (
                f"skipped: needs ≥ 4·N·O·P bytes = {need / 2**30:.1f} GiB > {limit:.0f} GiB "
                "limit (not compiled)"
            )
            return {"status": "skipped", "note": note, "method": method, "n_params": p}
    args = (case.model, case.o, case.n, (), repeats, limit, kdir, case.widths)
    if chunk and method in ("structured_derivatives", "auto"):
        extra = ("--floor", "--chunk", str(chunk))
        res = _harness.run_group(spec, *args, extra=extra, timeout_s=timeout_s)[method]
        res["note"] = f"ntk_zoo.batched, output_chunk={chunk} (--chunk)" + (
            f"; {res['note']}" if res["note"] else ""
        )
        return res
    res = _harness.run_group(spec, *args, extra=("--floor",), timeout_s=timeout_s)[method]
    planned = res.get("planned_bytes") or 0
    if res["status"] == "skipped" and method in ("structured_derivatives", "auto") and planned:
        # Whole kernel too big: the logits in chunks, each chunk's program about half the limit.
        chunk = max(1, int(case.o * 0.5 * limit * 2**30 / planned))
        whole = res["note"].removeprefix("skipped: ")
        extra = ("--floor", "--chunk", str(chunk))
        res = _harness.run_group(spec, *args, extra=extra, timeout_s=timeout_s)[method]
        res["note"] = f"ntk_zoo.batched, output_chunk={chunk} (whole kernel: {whole})" + (
            f"; {res['note']}" if res["note"] else ""
        )
        res.setdefault("planned_bytes", planned)
    return res


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", default="wrn,vit,resnet", help="comma-separated: wrn,vit,resnet"
    )
    parser.add_argument("--methods", default="SD,auto,JC,VP", help="comma-separated, in order")
    parser.add_argument("--repeats", type=int, default=2, help="steady calls after the first")
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--mem-limit-gib", type=float, default=16.0)
    parser.add_argument("--json", help="write all results to this file (after every method)")
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=1800.0,
        help="kill a method's process this long after its start (default 1800)",
    )
    parser.add_argument(
        "--chunk", type=int, default=0, help="SD and auto through ntk_zoo.batched(output_chunk=K)"
    )
    args = parser.parse_args(argv)
    cases = {c.key: c for c in (QUICK if args.quick else CASES)}
    keys = [k.strip() for k in args.models.split(",")]
    for k in keys:
        if k not in cases:
            raise SystemExit(f"--models: unknown {k!r}; use {', '.join(cases)}")
    methods = method_names(args.methods)
    _harness.set_mem_limit(args.mem_limit_gib)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs; {_harness.python_info()}; "
        f"load average at start {_harness.load()}; float32, trace_axes=(), vmap_axes=0, jitted; "
        f"memory limit {args.mem_limit_gib:.0f} GiB\n"
    )
    print(
        "| model | params (M) | N | O | method | build s | compile s | steady s | peak MiB | "
        "planned GiB | fwd GFLOP (XLA / ntk_zoo) | matmul GFLOP/s | floor s | of floor | "
        "load | note |"
    )
    print("|---" * 16 + "|")
    records = []
    with tempfile.TemporaryDirectory() as kdir:
        for k in keys:
            case = cases[k]
            ref = None
            for method in methods:
                r = run_method(
                    case, method, args.repeats, args.mem_limit_gib, kdir, args.chunk, args.timeout_s
                )
                r["load"] = _harness.load()
                floor = floor_s(r, case.o)
                steady = r.get("steady_s")
                notes = [r["note"]]
                if method == "auto" and "chosen" in r:
                    notes.insert(0, f"picked {SHORT.get(r['chosen'], r['chosen'])}")
                if "kernel" in r:
                    if ref is None:
                        ref = (method, r["kernel"])
                    else:
                        err = _harness.rel_err(r["kernel"], ref[1])
                        notes.append(f"rel. err vs {SHORT[ref[0]]}: {err:.1e}")
                    r.pop("kernel")
                xla, own = r.get("fwd_flops_xla"), r.get("fwd_flops_jaxpr")
                flops = f"{fmt(xla and xla / 1e9, '.3g')} / {fmt(own and own / 1e9, '.3g')}"
                rate = matmul_rate(r)
                planned = r.get("planned_bytes")
                print(
                    f"| {case.title} | {fmt(r.get('n_params') and r['n_params'] / 1e6, '.2f')} | "
                    f"{case.n} | {case.o} | {SHORT[method]} | {fmt(r.get('build_s'), '.1f')} | "
                    f"{fmt(r.get('compile_s'), '.1f')} | {fmt(steady, '.2f')} | "
                    f"{fmt(r.get('peak_rss_mib'), '.0f')} | "
                    f"{fmt(planned and planned / 2**30, '.1f')} | {flops} | "
                    f"{fmt(rate and rate / 1e9, '.0f')} | {fmt(floor, '.2f')} | "
                    f"{fmt(floor and steady and floor / steady, '.2f')} | {r['load']} | "
                    f"{'; '.join(x for x in notes if x)} |",
                    flush=True,
                )
                records.append({"case": case._asdict(), "floor_s": floor, **r})
                if args.json:
                    with open(args.json, "w") as fh:
                        json.dump(records, fh, indent=1)
    print(
        f"\nload average at end {_harness.load()}. floor s = forward FLOPs on the batch (XLA's "
        "cost analysis) × (1 + O) / the matmul rate of the same process; of floor = floor s / "
        "steady s; compile = AOT compile + first call − steady; build = the model's "
        "construction and initialisation."
    )
    if args.json:
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
