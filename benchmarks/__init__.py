"""ntk_zoo's benchmarks: one package, one timing harness, one model list, a suite per question.

    python -m benchmarks <suite> [--quick] [suite options]     # or: make bench SUITE=<suite>
    python -m benchmarks all --quick                           # every suite, tiny sizes

* ``_harness.py``: the one timing harness. Every measurement runs in a fresh process (so its
  peak memory is its own), the processes of a comparison are timed in alternating rounds, the
  steady time is a median, and compile time and peak / base memory are reported beside it.
* ``_worker.py``: the process one kernel case runs in (under ntk_zoo's environment, or under
  neural-tangents' benchmarks/.nt-venv: it uses only APIs both jax versions have).
* ``bench_models.py``: the one model list (plain ``jax.numpy``, the same numbers under both).
* one module per question, listed in :data:`SUITES`; each has ``main(argv)``.

Each suite prints markdown tables; ``python -m benchmarks`` also appends them to
``benchmarks/results/<suite>.md`` as a new dated section, keeping the runs and notes before it
(``<suite>-quick.md`` with ``--quick``, rewritten each time).
``python -m benchmarks report`` (``report.py``) generates BENCHMARKS.md from those files: one
current table per suite, with the machine, versions and commit.
"""

# suite name -> (module, the question it answers); ``python -m benchmarks report`` gathers their
# results files into BENCHMARKS.md.
SUITES = {
    "methods": ("benchmarks.methods", "every method side by side on a small MLP and ConvNet"),
    "structured": (
        "benchmarks.structured",
        "the 24-cell grid: SD against JC, VP and auto (MLP, conv, ViT, WRN-16-4, ViT-S/16)",
    ),
    "vs-neural-tangents": (
        "benchmarks.vs_neural_tangents",
        "ntk_zoo against neural-tangents 0.6.5, method by method",
    ),
    "scaling": ("benchmarks.scaling", "time against MLP width and outputs; log-log slopes"),
    "whole-dataset": (
        "benchmarks.whole_dataset",
        "the whole digits kernel with ntk_zoo.batched, with and without checkpoints",
    ),
    "lambda-min": (
        "benchmarks.shift_invert_lmin",
        "λ_min of a float32 kernel file out of core (shift-invert) against eigvalsh: time, RSS",
    ),
    "calibrate": (
        "benchmarks.calibrate",
        "the cost table auto ranks methods by, measured here; --check: the model on the grid",
    ),
    "published-sizes": (
        "benchmarks.published",
        "WRN-28-10, ViT-B/16, 1000-logit ResNet-18: steady, compile, build, peak, FLOP floor",
    ),
    "scan": (
        "benchmarks.scan",
        "layers stacked with scan vs unrolled (linen transformer 4 ways, Haiku MLP): JC/SD/auto",
    ),
    "gpu": (
        "benchmarks.gpu",
        "the GPU run: calibrate; 6 grid cells, estimated and measured auto; WRN-28-10, ViT-B/16",
    ),
    "features": (
        "benchmarks.features",
        "pNTK vs the full kernel (ViT-S/16, WRN-16-4), features vs vmap(grad), error vs dim",
    ),
    "processes": (
        "benchmarks.multihost",
        "one kernel over 1 and 2 processes (jax.distributed): speed-up, blocks/s per device",
    ),
}
