"""The cost table that ``auto`` ranks methods by, measured on this machine, and its check.

    python -m benchmarks calibrate [--rounds 3] [--budget-s 20] [--no-write]
                                   [--check] [--models mlp,conv,vit] [--n 16]
                                   [--measured structured.json] [--table shipped|row.json]

1. Measures :class:`ntk_zoo.core.CostTable` for the default backend with ``ntk_zoo.calibrate``
   (large matmul / convolution FLOP rate, small batched einsum FLOP rate, memory bandwidth,
   fixed cost per step) ``--rounds`` times and keeps each rate's median (the machine is shared:
   one round can be hit by another process). Unless ``--no-write``, the row replaces that
   backend's row of ``ntk_zoo/core/calibration.json``, the table the package ships (with the
   machine: CPU model, cores, device, jax / jaxlib versions, date); other backends' rows stay.
   Run it on a GPU machine to add the ``gpu`` row.
2. ``--check``: runs the cost model alone (``KernelFn.choose``, nothing computed) on every cell
   of the structured suite's grid (its ``GRID`` where it defines one, else ``--models`` ×
   O ∈ {8, 100} × trace_axes ∈ {(), (-1,)}, N=``--n``) with that table and prints every
   method's estimated seconds and the pick. With ``--measured`` (the ``--json`` of
   ``python -m benchmarks structured``), it puts the measured steady times beside the
   estimates: the fastest method, the pick's time over the fastest (a hit is within 10%),
   whether the estimated order of the methods is the measured one, and the hit rate.
3. ``--held-out``: the same check on the held-out models of ``python -m benchmarks gpu``
   (``gpu.HELD_OUT_CELLS``, which the table was not fitted on) instead of the grid.

Recorded times to score against, without timing anything (the estimates are deterministic for a
given table): ``benchmarks/results/grid-recorded.json`` (the grid's quiet per-cell times of
``results/structured.md``, cells 1-17 at load 0.3 and 18-24 at 75424c5) and
``benchmarks/results/held-out-recorded.json`` (the lead's quiet held-out run in
``results/auto.md``, 2026-12-06); called as below, nothing is written to
``results/calibrate.md`` (``python -m benchmarks calibrate`` appends a section to it)::

    python -c "from benchmarks import calibrate; calibrate.main(['--table', 'shipped',
      '--check', '--measured', 'benchmarks/results/grid-recorded.json'])"
    python -c "from benchmarks import calibrate; calibrate.main(['--table', 'shipped',
      '--check', '--held-out', '--measured', 'benchmarks/results/held-out-recorded.json'])"
"""

from __future__ import annotations

import argparse
import json
import statistics

import jax

import ntk_zoo
from benchmarks import bench_models
from benchmarks._harness import SHORT
from ntk_zoo.core import CostTable, use_table

SHIPPED = ntk_zoo.core.shipped_path()
RATES = ("matmul_flops", "einsum_flops", "memory_bytes", "overhead_s", "conv_grad_flops")
BASE = ("jacobian_contraction", "ntk_vector_products", "structured_derivatives")


def measure(rounds: int, budget_s: float) -> CostTable:
    tables = [ntk_zoo.calibrate(budget_s=budget_s, save=False) for _ in range(rounds)]
    rates = {name: statistics.median(getattr(t, name) for t in tables) for name in RATES}
    print(
        "| round | matmul GFLOP/s | small einsum GFLOP/s | memory GB/s | overhead µs/step "
        "| conv weight grads GFLOP/s |"
    )
    print("|---|---|---|---|---|---|")
    for i, t in enumerate([*tables, None]):
        row = rates if t is None else {name: getattr(t, name) for name in RATES}
        print(
            f"| {'median' if t is None else i + 1} | {row['matmul_flops'] / 1e9:.1f} | "
            f"{row['einsum_flops'] / 1e9:.1f} | {row['memory_bytes'] / 1e9:.2f} | "
            f"{row['overhead_s'] * 1e6:.2f} | {row['conv_grad_flops'] / 1e9:.1f} |"
        )
    machine = tables[-1].machine
    print(f"\nmachine: {json.dumps(machine)}")
    return CostTable(tables[-1].backend, **rates, source="shipped", machine=machine)


def write(table: CostTable) -> None:
    data = json.loads(SHIPPED.read_text()) if SHIPPED.exists() else {}
    data["schema"] = CostTable.SCHEMA
    data.setdefault("backends", {})[table.backend] = table.to_json()
    missing = [b for b in ("cpu", "gpu") if b not in data["backends"]]
    data["note"] = (
        "Written by `python -m benchmarks calibrate`; one row per backend ("
        + ", ".join(sorted(data["backends"]))
        + ")."
        + "".join(f" No {b} row: not measured yet (run this on a {b} machine)." for b in missing)
    )
    SHIPPED.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote the {table.backend} row to {SHIPPED}")


def grid(models: list[str], n: int) -> list[tuple]:
    """The structured suite's grid (``benchmarks.structured.GRID`` where it defines one), else
    ``models`` × O ∈ {8, 100} × trace_axes ∈ {(), (-1,)} with N=``n``: (model, O, N, trace_axes,
    image side)."""
    from benchmarks import structured

    cells = getattr(structured, "GRID", None)
    if cells is not None:
        return [(c.model, c.o, c.n, tuple(c.trace_axes), tuple(c.widths)) for c in cells]
    return [(m, o, n, t, ()) for m in models for o in (8, 100) for t in ((), (-1,))]


def held_out() -> list[tuple]:
    """The held-out cells of ``benchmarks.gpu`` as (model, O, N, trace_axes, widths)."""
    from benchmarks import gpu

    return [(m, o, n, tuple(t), ()) for m, o, n, t in gpu.HELD_OUT_CELLS]


def _build(model: str, o: int, n: int, widths: tuple) -> bench_models.Model:
    from benchmarks import gpu

    if model in gpu.HELD_OUT:
        return gpu.HELD_OUT[model](o, n)
    return bench_models.build(model, o=o, n=n, widths=widths)


def check(models: list[str], n: int, measured: str | None, only: list | None = None) -> None:
    times: dict = {}
    if measured:
        with open(measured) as fh:
            for r in json.load(fh):
                if r.get("side", "new") != "new" or r["method"] not in BASE:
                    continue
                key = (r["model"], r["o"], r["n"], tuple(r["trace_axes"]))
                if r.get("steady_s") is not None:
                    times.setdefault(key, {})[r["method"]] = r["steady_s"]
    where = "grid" if only is None else "held-out cells"
    print(f"\nThe cost model alone on the {where} (estimated seconds; nothing computed)")
    print(
        "| model | O | N | trace_axes | est. JC | est. VP | est. SD | pick | measured JC / VP / SD "
        "| fastest | pick / fastest | same order |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    hits = cells = same = 0
    for model, o, n_, trace_axes, widths in grid(models, n) if only is None else only:
        m = _build(model, o, n_, widths)
        fn = ntk_zoo.ntk_fn(m.f, trace_axes=trace_axes, vmap_axes=0)
        method, costs = fn.choose(m.x, None, m.params)
        est = " | ".join(f"{costs[b]:.3g}" for b in BASE)
        t = times.get((model, o, n_, trace_axes), {})
        cols = ["", "", "", ""]
        if t:
            fastest = min(t, key=t.get)
            pick = t.get(method.value)
            hit = pick is not None and pick <= 1.10 * t[fastest]
            order = sorted(t, key=t.get) == sorted(t, key=costs.get)
            cells, hits, same = cells + 1, hits + hit, same + order
            cols = [
                " / ".join(f"{t[b]:.3g}" if b in t else "-" for b in BASE),
                SHORT[fastest],
                ("not timed" if pick is None else f"{pick / t[fastest]:.2f}")
                + ("" if hit else " (miss)"),
                "yes" if order else "no",
            ]
        print(
            f"| {model} | {o} | {n_} | {trace_axes} | {est} | {SHORT[method.value]} | "
            + " | ".join(cols)
            + " |",
            flush=True,
        )
    if cells:
        print(
            f"\npick within 10% of the fastest: {hits}/{cells} = {hits / cells:.0%}; "
            f"estimated order of the timed methods = measured order: {same}/{cells}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=20.0, help="per round")
    parser.add_argument("--no-write", action="store_true", help="do not update the shipped row")
    parser.add_argument("--check", action="store_true", help="the cost model on the grid")
    parser.add_argument("--models", default="mlp,conv,vit")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--measured", help="the --json of `python -m benchmarks structured`")
    parser.add_argument(
        "--table", help="check with this table (a row's JSON file, or 'shipped') without measuring"
    )
    parser.add_argument(
        "--held-out", action="store_true", help="check on gpu.HELD_OUT_CELLS instead of the grid"
    )
    args = parser.parse_args(argv)
    backend = jax.default_backend()
    print(f"backend: {backend} ({jax.devices()[0].device_kind}); jax {jax.__version__}\n")
    if args.table == "shipped":
        table = ntk_zoo.core.shipped_tables()[backend]
    elif args.table:
        with open(args.table) as fh:
            table = CostTable.from_json(json.load(fh), source=args.table)
    else:
        table = measure(args.rounds, args.budget_s)
        if not args.no_write:
            write(table)
    use_table(table)
    if args.check:
        cells = held_out() if args.held_out else None
        check(args.models.split(","), args.n, args.measured, cells)


if __name__ == "__main__":
    main()
