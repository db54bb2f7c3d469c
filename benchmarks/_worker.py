"""One NTK case in its own process, driven over stdin/stdout by benchmarks/_harness.py.

    python -m benchmarks._worker --backend ours|nt --model mlp --o 8 --trace -1 --method NAME

Runs unchanged under our venv (jax 0.10.2, ``ntk_zoo.ntk_fn``) and under benchmarks/.nt-venv
(jax 0.4.23, ``neural_tangents.empirical_ntk_fn``); it only uses APIs both jax versions have.
Protocol: each reply is one stdout line ``@@ {json}``; anything else on stdout/stderr is noise.
On start it builds the model, lowers and compiles the jitted kernel function ahead of time and
replies ``ready`` (with XLA's planned memory, when it can tell). Then, one command per line:

* ``first``  — the first call of the compiled function (reply ``t``, seconds);
* ``run``    — one timed steady call (reply ``t``);
* ``save P`` — write the kernel to the .npy file ``P``;
* ``quit``   — reply ``peak_rss_mib`` (``ru_maxrss`` of this process) and exit.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import traceback

from benchmarks._harness import reply

METHODS = ("jacobian_contraction", "ntk_vector_products", "structured_derivatives", "auto")


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def kernel_fn(backend: str, f, method: str, trace_axes):
    """(kernel_fn, note) for this backend; raises NotImplementedError if the method is missing."""
    if backend == "nt":
        import neural_tangents as nt

        impl = nt.NtkImplementation[method.upper()]
        fn = nt.empirical_ntk_fn(f, trace_axes=trace_axes, vmap_axes=0, implementation=impl)
        return fn, f"neural-tangents {nt.__version__}"
    import ntk_zoo

    fn = ntk_zoo.ntk_fn(f, method=method, trace_axes=trace_axes, vmap_axes=0)
    return fn, f"ntk_zoo {ntk_zoo.__version__}"


def planned_bytes(compiled) -> int | None:
    """Bytes XLA plans for arguments, outputs and temporaries (None if it will not say)."""
    try:
        m = compiled.memory_analysis()
        if isinstance(m, (list, tuple)):
            m = m[0]
        return int(
            m.temp_size_in_bytes
            + m.argument_size_in_bytes
            + m.output_size_in_bytes
            - m.alias_size_in_bytes
        )
    except Exception:
        return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=("ours", "nt"), required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--o", type=int, default=8)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--trace", default="-1", help="comma-separated axes, or 'none' for ()")
    parser.add_argument("--method", choices=METHODS, required=True)
    parser.add_argument("--widths", default="", help="model sizes (bench_models.build)")
    args = parser.parse_args()
    widths = tuple(int(w) for w in args.widths.split(",") if w)
    trace_axes = () if args.trace == "none" else tuple(int(a) for a in args.trace.split(","))

    if args.backend != "nt":
        # Before any JAX computation: ntk_zoo sets its XLA:CPU workaround (XLA_FLAGS) on import.
        import ntk_zoo  # noqa: F401

    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks import bench_models

    model = bench_models.build(args.model, o=args.o, n=args.n, widths=widths)
    params = jax.tree_util.tree_map(jnp.asarray, model.params)
    x = jnp.asarray(model.x)
    info = {
        "jax": jax.__version__,
        "numpy": np.__version__,
        "checksum": bench_models.checksum(model.params, model.x),
        "n_params": bench_models.n_params(model.params),
        "description": model.description,
    }
    try:
        fn, info["library"] = kernel_fn(args.backend, model.f, args.method, trace_axes)
    except NotImplementedError as e:
        reply(status="unavailable", error=str(e), **info)
        return
    if args.method == "auto":
        info["chosen"] = str(fn.choose(x, None, params)[0])
    info["rss_base_mib"] = rss_mib()
    try:
        start = time.perf_counter()
        compiled = jax.jit(fn).lower(x, None, params).compile()
        info["aot_compile_s"] = time.perf_counter() - start
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
        reply(status="error", error=error, trace=traceback.format_exc(), **info)
        return
    info["planned_bytes"] = planned_bytes(compiled)
    reply(status="ready", **info)

    kernel = None
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        try:
            if cmd in ("first", "run"):
                start = time.perf_counter()
                kernel = compiled(x, None, params)
                kernel.block_until_ready()
                reply(status="ok", t=time.perf_counter() - start)
            elif cmd == "save":
                np.save(arg, np.asarray(kernel))
                reply(status="ok", shape=list(kernel.shape))
            elif cmd == "quit":
                reply(status="ok", peak_rss_mib=rss_mib())
                return
            else:
                reply(status="error", error=f"unknown command {cmd!r}")
        except Exception as e:
            reply(status="error", error=f"{type(e).__name__}: {e}", trace=traceback.format_exc())
            return


if __name__ == "__main__":
    main()
