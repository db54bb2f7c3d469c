"""Structured derivatives against the other methods (and auto), ours only.

    python -m benchmarks structured [--models mlp,conv,vit] [--repeats 5] [--quick]
                                             [--json out.json] [--mem-limit-gib 14]

Models from benchmarks/bench_models.py (mlp, conv, vit), each with O=8 and O=100 logits and
``trace_axes=()`` (full O×O blocks) and ``(-1,)`` (mean over logits); N=16 (``--quick``: N=4,
O=8 only, 2 repeats). For each case, every method — jacobian_contraction (JC),
ntk_vector_products (VP), structured_derivatives (SD), auto — runs
``jax.jit(ntk_zoo.ntk_fn(f, method=m, trace_axes=..., vmap_axes=0))`` in float32 in a fresh
process of its own (benchmarks/_harness.py), so:

* peak memory = that process's ``ru_maxrss`` (imports and inputs included; ``base`` is the
  resident size just before compiling, so peak - base is what the case added);
* compile = ahead-of-time ``lower().compile()`` + first call - steady;
* steady = median of ``--repeats`` calls (3 when a call takes over 5 s); the methods' processes
  are timed in alternating rounds so that machine noise hits all of them alike.

A case that would not fit in ``--mem-limit-gib`` (XLA's own memory plan for the compiled
program) is skipped and says so — on the MLP with O=100, JC and VP would need the 16×100×14.9M
float32 Jacobian-sized buffer (~38 GiB planned), more than the 24 GiB machine.

Ratios printed: SD's speed-up over JC and over VP on the MLP; over the
faster of JC and VP on conv and ViT; and auto's choice against the fastest measured method
(a miss is a choice more than 10% slower than the fastest).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile

from benchmarks import _harness
from benchmarks._harness import SHORT, fmt, ratio

METHODS = ("jacobian_contraction", "ntk_vector_products", "structured_derivatives", "auto")
BASE = ("jacobian_contraction", "ntk_vector_products", "structured_derivatives")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="mlp,conv,vit", help="comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="N=4, O=8 only, 2 repeats")
    parser.add_argument("--json", help="write all results to this file")
    parser.add_argument("--mem-limit-gib", type=float, default=14.0)
    args = parser.parse_args(argv)
    n = 4 if args.quick else 16
    outs = (8,) if args.quick else (8, 100)
    repeats = 2 if args.quick else args.repeats
    _harness.set_mem_limit(args.mem_limit_gib)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs; ours: .venv "
        f"({_harness.python_info()}); float32, vmap_axes=0, jitted; N={n}\n"
    )
    header = (
        "| model | O | trace_axes | method | compile s | steady s | peak MiB | base MiB | note |"
    )
    print(header)
    print("|---|---|---|---|---|---|---|---|---|")
    records = []
    with tempfile.TemporaryDirectory() as kdir:
        for model in args.models.split(","):
            for o in outs:
                for trace_axes in ((), (-1,)):
                    specs = {m: (_harness.OURS_PYTHON, "ours", m) for m in METHODS}
                    res = _harness.run_group(
                        specs, model, o, n, trace_axes, repeats, args.mem_limit_gib, kdir
                    )
                    ref_m = next((m for m in BASE if "kernel" in res[m]), None)
                    ref = res[ref_m]["kernel"] if ref_m else None
                    for m in METHODS:
                        r = res[m]
                        notes = [r["note"]]
                        if m == "auto" and "chosen" in r:
                            notes.insert(0, f"picked {SHORT.get(r['chosen'], r['chosen'])}")
                        if "kernel" in r and ref is not None and r["kernel"] != ref:
                            err = _harness.rel_err(r["kernel"], ref)
                            notes.append(f"rel. err vs {SHORT[ref_m]}: {err:.1e}")
                        note = "; ".join(x for x in notes if x)
                        print(
                            f"| {model} | {o} | {trace_axes} | {SHORT[m]} | "
                            f"{fmt(r.get('compile_s'), '.2f')} | {fmt(r.get('steady_s'), '.3f')} | "
                            f"{fmt(r.get('peak_rss_mib'), '.0f')} | "
                            f"{fmt(r.get('base_rss_mib'), '.0f')} | {note} |",
                            flush=True,
                        )
                        r.pop("kernel", None)
                        records.append(
                            {"model": model, "o": o, "n": n, "trace_axes": list(trace_axes), **r}
                        )
    summarize(records)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(records, fh, indent=1)
        print(f"\nwrote {args.json}")


def summarize(records: list) -> None:
    cases: dict = {}
    for r in records:
        key = (r["model"], r["o"], tuple(r["trace_axes"]))
        cases.setdefault(key, {})[r["method"]] = r

    print(
        "\nSpeed-ups of structured derivatives (other method's steady time / SD's; >1: SD faster)"
    )
    print("| model | O | trace_axes | SD vs JC | SD vs VP | SD vs best of JC, VP |")
    print("|---|---|---|---|---|---|")
    for (model, o, trace_axes), c in cases.items():
        t = {m: c[m].get("steady_s") for m in METHODS}
        others = [t[m] for m in BASE[:2] if t[m] is not None]
        best = min(others) if others else None
        sd = t["structured_derivatives"]
        if sd is None:
            why = c["structured_derivatives"]["note"] or "no time"
            print(f"| {model} | {o} | {trace_axes} | {why} | | |")
            continue
        vs_jc, vs_vp = ratio(t["jacobian_contraction"], sd), ratio(t["ntk_vector_products"], sd)
        print(f"| {model} | {o} | {trace_axes} | {vs_jc} | {vs_vp} | {ratio(best, sd)} |")
    print("(targets: the MLP by SD vs JC and vs VP; conv and ViT by SD vs best of the other two)")

    print("\nauto against the fastest measured method (miss: its pick is >10% slower than fastest)")
    print(
        "| model | O | trace_axes | auto picked | fastest | pick / fastest | auto run / fastest |"
    )
    print("|---|---|---|---|---|---|---|")
    misses = []
    for (model, o, trace_axes), c in cases.items():
        t = {m: c[m].get("steady_s") for m in METHODS}
        timed = {m: t[m] for m in BASE if t[m] is not None}
        chosen = c["auto"].get("chosen")
        if not timed or chosen is None:
            print(f"| {model} | {o} | {trace_axes} | {chosen} | | | |")
            continue
        fastest = min(timed, key=timed.get)
        pick = timed.get(chosen)
        pick_ratio = "not timed" if pick is None else f"{pick / timed[fastest]:.2f}"
        if pick is None or pick > 1.10 * timed[fastest]:
            misses.append(f"{model} O={o} trace_axes={trace_axes}: picked {SHORT[chosen]}")
        untimed = [SHORT[m] for m in BASE if m not in timed]
        fastest_s = SHORT[fastest] + (f" (of timed; {', '.join(untimed)} not)" if untimed else "")
        print(
            f"| {model} | {o} | {trace_axes} | {SHORT[chosen]} | {fastest_s} | {pick_ratio} | "
            f"{ratio(t['auto'], timed[fastest]).rstrip('×')} |"
        )
    print(f"auto misses: {len(misses)}" + "".join(f"\n  - {m}" for m in misses))


if __name__ == "__main__":
    main()
