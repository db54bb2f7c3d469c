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

The ``ready`` reply also gives ``build_s``, the seconds the model's construction and
initialisation took (after the backend started). With ``--floor`` it adds what the FLOP floor of
``benchmarks/published.py`` needs, measured in this process: ``fwd_flops_xla`` (XLA's cost
analysis of the jitted forward pass on the batch), ``fwd_flops_jaxpr`` (ntk_zoo's own count of
the same pass) and ``matmul_flops_per_s`` (a 2048² float32 matmul, best of 5), and every
``first``/``run`` reply adds ``rate``, the same matmul's rate right after that call. With
``--chunk K`` the kernel is computed by ``ntk_zoo.batched(..., output_chunk=K)`` (the output
directions of a ``trace_axes=()`` kernel in chunks of K; compiled on the first call, so
``aot_compile_s`` is 0).
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


def floor_inputs(f, params, x) -> dict:
    """Forward FLOPs of ``f(params, x)`` on the whole batch (XLA's cost analysis, and ntk_zoo's
    count of the traced program) and this process's float32 matmul rate (2048², best of 5)."""
    import jax

    out = {}
    try:
        cost = jax.jit(f).lower(params, x).compile().cost_analysis()
        if isinstance(cost, (list, tuple)):
            cost = cost[0]
        out["fwd_flops_xla"] = float(cost["flops"])
    except Exception:
        out["fwd_flops_xla"] = None
    try:
        import ntk_zoo

        out["fwd_flops_jaxpr"] = float(ntk_zoo.forward_flops(f, params, x, {}))
    except Exception:
        out["fwd_flops_jaxpr"] = None
    out["matmul_flops_per_s"] = matmul_rate(5)
    return out


def matmul_rate(tries: int) -> float:
    """FLOP/s of a 2048² float32 matmul in this process, best of ``tries``."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((2048, 2048), jnp.float32)
    mm = jax.jit(lambda a: a @ a)
    mm(a).block_until_ready()
    runs = []
    for _ in range(tries):
        start = time.perf_counter()
        mm(a).block_until_ready()
        runs.append(time.perf_counter() - start)
    return 2 * 2048**3 / min(runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=("ours", "nt"), required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--o", type=int, default=8)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--trace", default="-1", help="comma-separated axes, or 'none' for ()")
    parser.add_argument("--method", choices=METHODS, required=True)
    parser.add_argument("--widths", default="", help="model sizes (bench_models.build)")
    parser.add_argument("--floor", action="store_true", help="measure the FLOP floor's inputs")
    parser.add_argument("--chunk", type=int, default=0, help="ntk_zoo.batched output_chunk")
    args = parser.parse_args()
    widths = tuple(int(w) for w in args.widths.split(",") if w)
    trace_axes = () if args.trace == "none" else tuple(int(a) for a in args.trace.split(","))

    if args.backend != "nt":
        # Before any JAX computation: ntk_zoo sets its XLA:CPU workaround (XLA_FLAGS) on import.
        import ntk_zoo

    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks import bench_models

    jnp.zeros(()).block_until_ready()  # start the backend before timing the build
    start = time.perf_counter()
    model = bench_models.build(args.model, o=args.o, n=args.n, widths=widths)
    build_s = time.perf_counter() - start
    params = jax.tree_util.tree_map(jnp.asarray, model.params)
    x = jnp.asarray(model.x)
    info = {
        "build_s": build_s,
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
    if args.floor:
        info.update(floor_inputs(model.f, params, x))
    if args.method == "auto":
        info["chosen"] = str(fn.choose(x, None, params)[0])
    info["rss_base_mib"] = rss_mib()
    try:
        start = time.perf_counter()
        if args.chunk:
            import ntk_zoo

            whole = ntk_zoo.batched(
                fn, batch_size=x.shape[0], output_chunk=args.chunk, progress=False
            )
            compiled = lambda x, x2, params: jnp.asarray(whole(x, x2, params))
            info["chunk"] = args.chunk
        else:
            compiled = jax.jit(fn).lower(x, None, params).compile()
        info["aot_compile_s"] = time.perf_counter() - start
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
        reply(status="error", error=error, trace=traceback.format_exc(), **info)
        return
    info["planned_bytes"] = None if args.chunk else planned_bytes(compiled)
    reply(status="ready", **info)

    kernel = None
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        try:
            if cmd in ("first", "run"):
                start = time.perf_counter()
                kernel = compiled(x, None, params)
                kernel.block_until_ready()
                t = time.perf_counter() - start
                # With --floor, the matmul rate again right after each call (same load).
                reply(status="ok", t=t, **({"rate": matmul_rate(3)} if args.floor else {}))
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
