"""ntk_zoo against neural-tangents 0.6.5, method by method, same models, weights and inputs.

    bash benchmarks/nt_env.sh            # once: builds benchmarks/.nt-venv (jax 0.4.23)
    python -m benchmarks vs-neural-tangents [--models mlp,conv,vit] [--repeats 5]
        [--quick] [--json out.json] [--mem-limit-gib 14]

For each model of benchmarks/bench_models.py × O ∈ {8, 100} × trace_axes ∈ {(), (-1,)} × method
∈ {JC, VP, SD}, two fresh processes run the same ``f(params, x)`` (float32, N=16, jitted,
``vmap_axes=0``): ours, ``ntk_zoo.ntk_fn(f, method=m, ...)`` under .venv (jax 0.10.2), and
theirs, ``nt.empirical_ntk_fn(f, implementation=nt.NtkImplementation.M, ...)`` under
benchmarks/.nt-venv (jax 0.4.23). Both compile first; then steady calls ALTERNATE (ours, theirs,
ours, theirs, ...; ``--repeats`` each, 3 if a call takes over 5 s) and the medians are compared.

Convention: **speed-up = theirs_time / ours_time**; above 1 means ntk_zoo is faster. Memory is
each process's peak ``ru_maxrss`` (neural-tangents' process also imports TensorFlow, ~400 MiB
more at rest: see the ``base`` columns, the resident size before compiling). Agreement: each of
our kernels is compared with neural-tangents' kernel of the same method (or, if that one failed,
with any of its kernels for the case): ``max|ours - theirs| / max|theirs|``, both in float32;
``ok`` below 1e-4. A case that would not fit in ``--mem-limit-gib`` is skipped and says why;
an implementation that fails (neural-tangents' structured derivatives on some primitives) is
reported with its error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile

from benchmarks import _harness
from benchmarks._harness import SHORT, fmt

METHODS = ("jacobian_contraction", "ntk_vector_products", "structured_derivatives")
TOL = 1e-4


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="mlp,conv,vit", help="comma-separated")
    parser.add_argument("--methods", default="jc,vp,sd", help="comma-separated subset of jc,vp,sd")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="N=4, O=8 only, 2 repeats")
    parser.add_argument("--json", help="write all results to this file")
    parser.add_argument("--mem-limit-gib", type=float, default=14.0)
    args = parser.parse_args(argv)
    if not os.path.exists(_harness.NT_PYTHON):
        sys.exit(
            f"neural-tangents' environment {os.path.dirname(os.path.dirname(_harness.NT_PYTHON))} "
            "is missing: run `bash benchmarks/nt_env.sh` first (it builds it, ~1 minute)."
        )
    wanted = {s.strip().lower() for s in args.methods.split(",")}
    methods = [m for m in METHODS if SHORT[m].lower() in wanted]
    n = 4 if args.quick else 16
    outs = (8,) if args.quick else (8, 100)
    repeats = 2 if args.quick else args.repeats
    _harness.set_mem_limit(args.mem_limit_gib)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs; float32, vmap_axes=0, jitted, "
        f"N={n}; speed-up = theirs_time / ours_time (>1: ntk_zoo faster)\n"
    )
    print(
        "| model | O | trace_axes | method | ours steady s | theirs steady s | speed-up | "
        "ours compile s | theirs compile s | ours peak MiB | theirs peak MiB | "
        "ours / theirs base MiB | rel. err | note |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    records, versions, bad = [], {}, []
    with tempfile.TemporaryDirectory() as kdir:
        for model in args.models.split(","):
            for o in outs:
                for trace_axes in ((), (-1,)):
                    nt_kernels: dict = {}
                    for m in methods:
                        specs = {
                            f"ours-{m}": (_harness.OURS_PYTHON, "ours", m),
                            f"nt-{m}": (_harness.NT_PYTHON, "nt", m),
                        }
                        res = _harness.run_group(
                            specs, model, o, n, trace_axes, repeats, args.mem_limit_gib, kdir
                        )
                        ours, theirs = res[f"ours-{m}"], res[f"nt-{m}"]
                        for side, r in (("ours", ours), ("theirs", theirs)):
                            if "library" in r:
                                versions[side] = f"{r['library']}, jax {r['jax']}, "
                                versions[side] += f"numpy {r['numpy']}"
                        if "kernel" in theirs:
                            nt_kernels[m] = theirs["kernel"]
                        row = compare(model, o, trace_axes, m, ours, theirs, nt_kernels, bad)
                        print(row, flush=True)
                        for r in (ours, theirs):
                            r.pop("kernel", None)
                        records.append(
                            {
                                "model": model,
                                "o": o,
                                "n": n,
                                "trace_axes": list(trace_axes),
                                "method": m,
                                "ours": ours,
                                "theirs": theirs,
                            }
                        )
    print()
    for side, v in versions.items():
        print(f"{side}: {v}")
    print(f"kernels disagreeing (rel. err > {TOL:g}) or with different inputs: {len(bad)}")
    for b in bad:
        print(f"  - {b}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(records, fh, indent=1)
        print(f"wrote {args.json}")


def compare(model, o, trace_axes, m, ours, theirs, nt_kernels, bad) -> str:
    notes, err_s = [], ""
    if ours.get("checksum") is not None and theirs.get("checksum") is not None:
        if abs(ours["checksum"] - theirs["checksum"]) > 1e-6 * abs(theirs["checksum"]):
            notes.append("INPUTS DIFFER")
            bad.append(f"{model} O={o} {trace_axes} {SHORT[m]}: inputs differ")
    if "kernel" in ours:
        ref_m = m if m in nt_kernels else next(iter(nt_kernels), None)
        if ref_m is not None:
            err = _harness.rel_err(ours["kernel"], nt_kernels[ref_m])
            ok = err <= TOL
            err_s = f"{err:.1e} {'ok' if ok else 'FAIL'}"
            if ref_m != m:
                err_s += f" (vs their {SHORT[ref_m]})"
            if not ok:
                bad.append(f"{model} O={o} {trace_axes} {SHORT[m]}: rel. err {err:.1e}")
    for side, r in (("ours", ours), ("theirs", theirs)):
        if r["status"] != "ok":
            notes.append(f"{side}: {r['note'] or r['status']}")
    t_ours, t_theirs = ours.get("steady_s"), theirs.get("steady_s")
    speedup = f"{t_theirs / t_ours:.2f}" if t_ours and t_theirs else ""
    base = ""
    if ours.get("base_rss_mib") and theirs.get("base_rss_mib"):
        base = f"{ours['base_rss_mib']:.0f} / {theirs['base_rss_mib']:.0f}"
    return (
        f"| {model} | {o} | {trace_axes} | {SHORT[m]} | {fmt(t_ours, '.3f')} | "
        f"{fmt(t_theirs, '.3f')} | {speedup} | {fmt(ours.get('compile_s'), '.2f')} | "
        f"{fmt(theirs.get('compile_s'), '.2f')} | {fmt(ours.get('peak_rss_mib'), '.0f')} | "
        f"{fmt(theirs.get('peak_rss_mib'), '.0f')} | {base} | {err_s} | {'; '.join(notes)} |"
    )


if __name__ == "__main__":
    main()
