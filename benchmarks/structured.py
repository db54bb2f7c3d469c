"""Structured derivatives against the other methods (and auto): the 24-cell grid, ours only.

    python -m benchmarks structured [--cells 1-12,17] [--repeats 5] [--quick]
                                    [--baseline PATH] [--json out.json] [--mem-limit-gib 14]

**The grid.** 24 cells, numbered as printed (``--cells`` picks some, e.g. ``--cells 13-24``):

* 1–12, the earlier grid kept for continuity: ``mlp``, ``conv``, ``vit`` (plain-JAX models of
  benchmarks/bench_models.py) × O ∈ {8, 100} × ``trace_axes`` ∈ {``()``, ``(-1,)``}, N=16;
* 13–16, N=32 where structured derivatives (SD) used to lose: ``conv`` and ``vit`` at O=8,
  both ``trace_axes`` (doubling N quadruples the N² contraction of every method, but only
  doubles SD's ``∂f/∂y`` pass);
* 17–21, the zoo's WRN-16-4 (``architectures.build``, Flax linen, 2.75M params) on 32×32×3:
  O=10 × both ``trace_axes`` × N ∈ {16, 32}, and O=100 with full blocks at N=16 (XLA plans
  11.2 GiB for JC, 10.8 GiB for SD, 73.5 GiB for VP: VP never fits);
* 22–24, the zoo's ViT-S/16 (12 blocks of width 384, 21.7M params) on 32×32×3 images (2×2
  patches of 16 plus the class token: 5 tokens, so that a cell takes seconds, not minutes):
  O=10 × both ``trace_axes`` at N=16, and O=10 full blocks at N=32.

So the grid covers every model family (MLP, conv, ViT, WideResNet, zoo ViT), O small (8 or 10)
and O=100, both ``trace_axes`` and N ∈ {16, 32}, with the large-O and large-N cells placed
where they are feasible on a 2-core CPU. Time on an idle 2-core machine, estimated (the whole
grid has not yet been run on an idle machine): about 30–40 min, of which the MLP cells with O=8
(JC and VP take 5–10 s a call) and the zoo cells (WRN-16-4: 5–15 s a call; cell 21: SD and auto
about a minute a call) take most; split it with ``--cells`` (e.g. ``1-16`` then ``17-24``).
``--quick`` runs 6 cells at tiny sizes (N=4 or 8; WRN-10-1 and ViT-test/4 on 16×16×3 in place
of the zoo models), a few minutes: a smoke run, not a measurement.

**Each cell.** Every method — jacobian_contraction (JC), ntk_vector_products (VP),
structured_derivatives (SD), auto — runs ``jax.jit(ntk_zoo.ntk_fn(f, method=m,
trace_axes=..., vmap_axes=0))`` in float32, in a fresh process of its own
(benchmarks/_harness.py), the four processes timed in alternating rounds:

* steady = median of ``--repeats`` calls (3 when a call takes over 5 s, 2 over 10 s);
* compile = ahead-of-time ``lower().compile()`` + first call − steady;
* peak = the process's ``ru_maxrss``; base = its resident size just before compiling.

A method whose compiled program would not fit ``--mem-limit-gib`` (XLA's own memory plan) is
skipped and says so. Kernels are compared with the first of JC, VP, SD that ran.

**Ratios**, printed after each cell and summarised at the end: SD's speed-up over the faster
of JC and VP (their time / SD's; the target is ≥ 1.0× in every cell; "only SD fits" where
neither ran); auto's pick against the fastest measured method (a miss: the picked method's
time is more than 10% above the fastest's, or the pick did not run); counts of both.

**--baseline PATH** runs every method of every cell also with another checkout's ``ntk_zoo``
and ``architectures`` (e.g. ``/work/main``) — same benchmark code and models — each method's
two processes timed alternately; a column gives baseline time / this checkout's time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from typing import NamedTuple

from benchmarks import _harness
from benchmarks._harness import SHORT, fmt, ratio

METHODS = ("jacobian_contraction", "ntk_vector_products", "structured_derivatives", "auto")
BASE = ("jacobian_contraction", "ntk_vector_products", "structured_derivatives")


class Cell(NamedTuple):
    model: str
    o: int
    n: int
    trace_axes: tuple
    widths: tuple = ()  # image side for the zoo models (bench_models.build)


def _grid() -> list[Cell]:
    traces = ((), (-1,))
    cells = [
        Cell(model, o, 16, t) for model in ("mlp", "conv", "vit") for o in (8, 100) for t in traces
    ]
    cells += [Cell(model, 8, 32, t) for model in ("conv", "vit") for t in ((), (-1,))]
    cells += [Cell("wrn-16-4", 10, n, t, (32,)) for n in (16, 32) for t in ((), (-1,))]
    cells += [Cell("wrn-16-4", 100, 16, (), (32,))]
    cells += [Cell("vit-S/16", 10, 16, t, (32,)) for t in ((), (-1,))]
    cells += [Cell("vit-S/16", 10, 32, (), (32,))]
    return cells


GRID = _grid()
QUICK = [
    Cell("mlp", 8, 4, ()),
    Cell("conv", 100, 4, (-1,)),
    Cell("vit", 8, 8, ()),
    Cell("wrn-10-1", 10, 4, (), (16,)),
    Cell("wrn-10-1", 100, 4, (), (16,)),
    Cell("vit-test/4", 10, 4, (-1,), (16,)),
]


def parse_cells(spec: str, count: int) -> list[int]:
    """``"1-12,17"`` -> [1, ..., 12, 17] (1-based cell numbers)."""
    picked: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise SystemExit(f"--cells {spec!r}: use numbers and ranges such as 1-12,17") from None
        if not 1 <= first <= last <= count:
            raise SystemExit(f"--cells {spec!r}: cells are numbered 1 to {count}")
        picked += [i for i in range(first, last + 1) if i not in picked]
    return picked


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", default="", help="cell numbers, e.g. 1-12,17 (default: all)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="6 tiny cells, 2 repeats")
    parser.add_argument("--baseline", help="another checkout's root, timed side by side")
    parser.add_argument("--json", help="write all results to this file (after every cell)")
    parser.add_argument("--mem-limit-gib", type=float, default=14.0)
    parser.add_argument(
        "--methods",
        default="JC,VP,SD,auto",
        help="which methods to run (e.g. JC,SD,auto: VP takes minutes a call on the zoo cells)",
    )
    args = parser.parse_args(argv)
    chosen = args.methods.split(",")
    unknown = [x for x in chosen if x not in SHORT.values()]
    methods = tuple(m for m in METHODS if SHORT[m] in chosen)
    if unknown or not methods:
        parser.error(f"--methods: unknown {unknown}; choose from {','.join(SHORT.values())}")
    grid = QUICK if args.quick else GRID
    numbers = parse_cells(args.cells, len(grid)) if args.cells else list(range(1, len(grid) + 1))
    repeats = 2 if args.quick else args.repeats
    _harness.set_mem_limit(args.mem_limit_gib)
    sides = {"new": None}
    if args.baseline:
        sides["base"] = _harness.checkout_path(args.baseline)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs; {_harness.python_info()}; "
        f"load average at start {_harness.load()}; float32, vmap_axes=0, jitted; "
        f"cells {','.join(map(str, numbers))} of {len(grid)}"
        + (f"; baseline: {os.path.abspath(args.baseline)}" if args.baseline else "")
        + "\n"
    )
    head = "| # | model | O | N | trace_axes | method | compile s | steady s | peak MiB |"
    head += " base MiB |"
    if args.baseline:
        head += " baseline steady s | baseline / this |"
    print(head + " note |")
    print("|---" * head.count("|") + "|")
    records = []
    with tempfile.TemporaryDirectory() as kdir:
        for number in numbers:
            cell = grid[number - 1]
            res = run_cell(cell, sides, repeats, args.mem_limit_gib, kdir, methods)
            records += print_cell(number, cell, res, bool(args.baseline))
            if args.json:
                with open(args.json, "w") as fh:
                    json.dump(records, fh, indent=1)
    print(f"\nload average at end {_harness.load()}")
    summarize(records, "new")
    if args.baseline:
        print("\n**Baseline** (" + os.path.abspath(args.baseline) + "):")
        summarize(records, "base")
    if args.json:
        print(f"\nwrote {args.json}")


def run_cell(
    cell: Cell, sides: dict, repeats: int, limit: float, kdir: str, methods=METHODS
) -> dict:
    """{(side, method): result}; without a baseline the four methods are timed alternately,
    with one each method's two versions are (a group per method, to keep memory bounded).
    Methods not in ``methods`` are reported as not run."""

    def spec(side, m):
        path = sides[side]
        return (_harness.OURS_PYTHON, "ours", m) + (() if path is None else (path,))

    if len(sides) == 1:
        groups = [{f"new-{m}": spec("new", m) for m in methods}]
    else:
        groups = [{f"{s}-{m}": spec(s, m) for s in sides} for m in methods]
    out = {
        (side, m): {"status": "skipped", "note": "not run (--methods)"}
        for side in sides
        for m in METHODS
        if m not in methods
    }
    for specs in groups:
        res = _harness.run_group(
            specs, cell.model, cell.o, cell.n, cell.trace_axes, repeats, limit, kdir, cell.widths
        )
        for key, r in res.items():
            side, _, m = key.partition("-")
            out[(side, m)] = r
    return out


def print_cell(number: int, cell: Cell, res: dict, baseline: bool) -> list:
    records = []
    for side in ("new", "base") if baseline else ("new",):
        ref_m = next((m for m in BASE if "kernel" in res[(side, m)]), None)
        ref = res[(side, ref_m)]["kernel"] if ref_m else None
        for m in METHODS:
            r = res[(side, m)]
            notes = [r["note"]]
            if m == "auto" and "chosen" in r:
                notes.insert(0, f"picked {SHORT.get(r['chosen'], r['chosen'])}")
            if "kernel" in r and ref is not None and r["kernel"] != ref:
                err = _harness.rel_err(r["kernel"], ref)
                notes.append(f"rel. err vs {SHORT[ref_m]}: {err:.1e}")
            if side == "new" and baseline and "kernel" in r and "kernel" in res[("base", m)]:
                err = _harness.rel_err(r["kernel"], res[("base", m)]["kernel"])
                notes.append(f"vs baseline: {err:.1e}")
            r["notes"] = "; ".join(x for x in notes if x)
    for m in METHODS:
        r = res[("new", m)]
        row = (
            f"| {number} | {cell.model} | {cell.o} | {cell.n} | {cell.trace_axes} | {SHORT[m]} | "
            f"{fmt(r.get('compile_s'), '.2f')} | {fmt(r.get('steady_s'), '.3f')} | "
            f"{fmt(r.get('peak_rss_mib'), '.0f')} | {fmt(r.get('base_rss_mib'), '.0f')} |"
        )
        if baseline:
            b = res[("base", m)]
            speedup = ratio(b.get("steady_s"), r.get("steady_s"))
            row += f" {fmt(b.get('steady_s'), '.3f')} | {speedup} |"
            if b["notes"]:
                r["notes"] += ("; " if r["notes"] else "") + "baseline: " + b["notes"]
        print(row + f" {r['notes']} |", flush=True)
    for (side, m), r in res.items():
        r.pop("kernel", None)
        records.append(
            {
                "cell": number,
                "side": side,
                "method": m,
                "model": cell.model,
                "o": cell.o,
                "n": cell.n,
                "trace_axes": list(cell.trace_axes),
                "load": _harness.load(),
                **r,
            }
        )
    sd, auto = verdicts({m: res[("new", m)] for m in METHODS})
    blanks = " |" * (4 + 2 * baseline)
    print(
        f"| {number} | {cell.model} | {cell.o} | {cell.n} | {cell.trace_axes} | ratios |{blanks} "
        f"SD {sd}; auto {auto} |",
        flush=True,
    )
    return records


def verdicts(c: dict) -> tuple[str, str]:
    """(SD's speed-up over the faster of JC and VP, auto's pick against the fastest) as text."""
    t = {m: c[m].get("steady_s") for m in METHODS}
    sd = t["structured_derivatives"]
    others = [t[m] for m in BASE[:2] if t[m] is not None]
    if sd is None:
        sd_text = "did not run: " + (c["structured_derivatives"]["note"] or "no time")
    elif not others:
        sd_text = "only SD fits (JC and VP skipped)"
    else:
        sd_text = f"{min(others) / sd:.2f}× the faster of JC, VP"
    timed = {m: t[m] for m in BASE if t[m] is not None}
    chosen = c["auto"].get("chosen")
    if not timed or chosen is None:
        return sd_text, "no verdict (" + (c["auto"]["note"] or "nothing timed") + ")"
    fastest = min(timed, key=timed.get)
    pick = timed.get(chosen)
    if pick is None:
        return sd_text, f"picked {SHORT[chosen]}, which did not run: miss"
    r = pick / timed[fastest]
    verdict = "miss" if r > 1.10 else "ok"
    return sd_text, f"picked {SHORT[chosen]}, {r:.2f}× the fastest ({SHORT[fastest]}): {verdict}"


def summarize(records: list, side: str) -> None:
    cases: dict = {}
    for r in records:
        if r["side"] == side:
            cases.setdefault((r["cell"], r["model"], r["o"], r["n"], tuple(r["trace_axes"])), {})[
                r["method"]
            ] = r
    print(
        "\nPer cell: SD's speed-up over the faster of JC and VP (their time / SD's; ≥ 1: SD at "
        "least as fast), and auto's pick against the fastest measured method"
    )
    print(
        "| # | model | O | N | trace_axes | SD vs JC | SD vs VP | SD vs faster | auto picked | "
        "fastest | pick / fastest | auto run / fastest |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    sd_wins = sd_cells = only_sd = auto_ok = auto_cells = 0
    misses, losses = [], []
    for (number, model, o, n, trace_axes), c in cases.items():
        t = {m: c[m].get("steady_s") for m in METHODS}
        sd = t["structured_derivatives"]
        others = [t[m] for m in BASE[:2] if t[m] is not None]
        vs = "n/a"
        if sd is not None and others:
            sd_cells += 1
            sd_wins += min(others) >= sd
            vs = ratio(min(others), sd)
            if min(others) < sd:
                losses.append(f"cell {number} ({model} O={o} N={n} {trace_axes}): {vs}")
        elif sd is not None:
            only_sd += 1
            vs = "only SD fits"
        timed = {m: t[m] for m in BASE if t[m] is not None}
        chosen = c["auto"].get("chosen")
        picked = fastest_s = pick_s = run_s = ""
        if timed and chosen is not None:
            auto_cells += 1
            fastest = min(timed, key=timed.get)
            picked, fastest_s = SHORT[chosen], SHORT[fastest]
            pick = timed.get(chosen)
            pick_s = "not run" if pick is None else f"{pick / timed[fastest]:.2f}"
            run_s = ratio(t["auto"], timed[fastest]).rstrip("×")
            if pick is not None and pick <= 1.10 * timed[fastest]:
                auto_ok += 1
            else:
                misses.append(f"cell {number} ({model} O={o} N={n} {trace_axes}): picked {picked}")
        print(
            f"| {number} | {model} | {o} | {n} | {trace_axes} | "
            f"{ratio(t['jacobian_contraction'], sd)} | {ratio(t['ntk_vector_products'], sd)} | "
            f"{vs} | {picked} | {fastest_s} | {pick_s} | {run_s} |"
        )
    print(
        f"\nSD ≥ 1.0× the faster of JC and VP: {sd_wins} of {sd_cells} cells where JC or VP ran"
        f" (only SD fits in {only_sd} more)" + "".join(f"\n  - SD slower: {x}" for x in losses)
    )
    print(
        f"auto within 10% of the fastest: {auto_ok} of {auto_cells} cells"
        + "".join(f"\n  - miss: {x}" for x in misses)
    )


if __name__ == "__main__":
    main()
