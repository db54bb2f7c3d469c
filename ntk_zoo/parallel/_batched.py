"""``batched``: whole-dataset kernels in blocks, within a memory budget, over devices, processes
and hosts, into memory or into files larger than memory."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ntk_zoo.core import pad_rows
from ntk_zoo.engine import KernelFn, Method, ntk_fn
from ntk_zoo.parallel import _memory
from ntk_zoo.parallel._blocks import Layout, Plan, Task, n_examples, pair_kwargs, side_kwargs
from ntk_zoo.parallel._checkpoint import BlockStore, fingerprint
from ntk_zoo.parallel._sink import (
    FileSink,
    MemorySink,
    files_match,
    kernel_shapes,
    open_result,
    out_paths,
)
from ntk_zoo.parallel._team import Team, host_value

PyTree = Any
GATHER = ("all", "process0", "none")


@dataclass(frozen=True)
class Options:
    """How a kernel is computed and delivered (everything but the kernel itself)."""

    mesh: jax.sharding.Mesh | None
    progress: bool
    checkpoint_dir: str | None
    accumulate_dtype: Any
    gather: str
    out: str | None


@dataclass
class Stats:
    """Where one call's time went, on this process (``run.stats`` after each call).

    ``compute_s``: computing this process's blocks (loading saved ones and saving new ones
    included); ``gather_s``: exchanging blocks between processes (waiting for the slowest
    included); ``place_s``: putting blocks into the kernel (memory or file); ``wall_s``: the
    whole call; ``computed`` and ``loaded``: this process's blocks computed and read back from
    ``checkpoint_dir``; ``block_size``: examples per block (given, or picked from the budget);
    ``method``: the method every block program ran; ``method_source``: how it was picked
    (``"given"``, ``"estimate"``, ``"measured"``, ``"wisdom"``; ``auto`` measures when there is
    more than one block, unless ``AutoOptions(measure=False)``); ``method_times``: the measured
    seconds per block of each candidate timed (process 0 decides, the others follow).
    """

    wall_s: float = 0.0
    compute_s: float = 0.0
    gather_s: float = 0.0
    place_s: float = 0.0
    computed: int = 0
    loaded: int = 0
    block_size: int = 0
    method: str = ""
    method_source: str = ""
    method_times: dict = field(default_factory=dict)


def batched(
    kernel_fn: KernelFn,
    *,
    batch_size: int | None = None,
    memory_budget: int | None = None,
    mesh: jax.sharding.Mesh | bool | None = None,
    progress: bool = True,
    checkpoint_dir: str | None = None,
    accumulate_dtype: Any = None,
    output_chunk: int | None = None,
    gather: str = "all",
    out: str | None = None,
) -> Callable[..., PyTree]:
    """Computes ``kernel_fn(x1, x2, params, **kwargs)`` block by block; same signature.

    The examples (axis 0 of ``x1``, ``x2`` and the outputs) are tiled into blocks of any size:
    the last block is padded and trimmed, so nothing needs to divide anything. With
    ``x2=None`` only the blocks on and above the diagonal are computed (``Θ(x2, x1)`` is the
    transpose of ``Θ(x1, x2)``). Finished blocks go to the host (NumPy) or straight into a file,
    so the whole kernel never needs to fit on a device, nor, with ``out``, in memory.

    **Several processes and hosts.** After ``jax.distributed.initialize(...)`` on every process,
    pass a mesh over every process's devices (``mesh=True``): the processes share the block list
    (block ``k`` goes to mesh device ``k mod D``), each computes its blocks on its own devices,
    and results meet through ``jax.experimental.multihost_utils.process_allgather``, a round of
    blocks at a time (about 16 rounds, at most 256 MiB each). Every process must call
    ``batched`` alike, with the same inputs.

    Args:
      kernel_fn: from :func:`ntk_zoo.ntk_fn`, with ``vmap_axes`` (blocking is exact only for
        independent examples).
      batch_size: examples per block; ``None`` picks the largest block whose compiled memory
        estimate (``memory_analysis()``) fits ``memory_budget`` (process 0's pick, for several
        processes; with ``out``, at most ``⌈n/4⌉`` examples), and halves it on an
        out-of-memory error (one process only).
      memory_budget: bytes a block may use; default half the device's (or host's) free memory.
      mesh: ``True`` for all devices (of every process, after ``jax.distributed.initialize``),
        or a ``jax.sharding.Mesh`` with one axis; blocks are computed in groups, one per local
        device, sharded with ``NamedSharding``.
      progress: show a tqdm bar (blocks done, rate, time left; on process 0 only).
      checkpoint_dir: write each finished block there; a rerun resumes from them, computes no
        saved block again and gives the identical kernel, whatever its processes or devices
        (give ``batch_size``: an automatic one may differ between machines). A checkpoint from
        other inputs, params or settings (block size included) is refused. Several processes need a
        filesystem they all see to share a checkpoint.
      accumulate_dtype: dtype of the host result (default: the kernel's).
      output_chunk: for ``trace_axes=()`` kernels of ``(n, o)`` outputs, also tile the ``o``
        output directions in chunks of this size (for 100- or 1000-logit models).
      gather: with several processes, who receives the kernel: ``"all"`` (every process returns
        it), ``"process0"`` (process 0 does; the others return ``None``) or ``"none"`` (nobody
        assembles it: every process returns ``None`` and the blocks stay in ``checkpoint_dir``
        or ``out``, which one of them then needs).
      out: a ``.npy`` path: the kernel is written there block by block (process 0 writes it;
        with ``gather="none"`` each process writes its own blocks, so the file must be on a
        filesystem they all see) and returned as a ``np.memmap``. Memory stays bounded by the
        blocks in flight, whatever the kernel's size. A pytree of kernels gives one file per
        leaf, ``<stem>.<leaf path>.npy`` (``kernel.a.npy``, ``kernel.b.0.npy``). With
        ``checkpoint_dir`` too, blocks are stored once: the file is the checkpoint, and
        ``checkpoint_dir`` keeps only the fingerprint (which now names the files) and an
        empty marker per block written and synced into them; a rerun, with any number of
        processes, computes only the unmarked blocks (all of them if the files are gone).

    Returns:
      A function of ``(x1, x2=None, params=None, **kwargs)`` giving the kernel (``None`` on
      processes that asked for none, see ``gather``); its ``stats`` attribute tells where the
      last call's time went on this process (blocks computed and loaded, time computing,
      gathering and placing blocks; not with ``output_chunk``).

    Example:
      >>> import jax.numpy as jnp, ntk_zoo
      >>> f = lambda p, x: jnp.tanh(x @ p)
      >>> kernel_fn = ntk_zoo.ntk_fn(f, vmap_axes=0)
      >>> big = ntk_zoo.batched(kernel_fn, batch_size=4, progress=False)
      >>> big(jnp.ones((10, 3)), None, jnp.ones((3, 2))).shape
      (10, 10)
      >>> big.stats.computed  # blocks on and above the diagonal of a 3 × 3 grid
      6

      Into a file, bounded in memory::

      >>> import os, tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "kernel.npy")
      >>> theta = ntk_zoo.batched(kernel_fn, batch_size=4, progress=False, out=path)
      >>> k = theta(jnp.ones((10, 3)), None, jnp.ones((3, 2)))
      >>> type(k).__name__, k.shape, os.path.basename(k.filename)
      ('memmap', (10, 10), 'kernel.npy')
    """
    if not isinstance(kernel_fn, KernelFn):
        raise TypeError("batched takes the kernel function returned by ntk_zoo.ntk_fn.")
    if gather not in GATHER:
        raise ValueError(f"gather={gather!r}; choose one of {GATHER}.")
    if gather == "none" and checkpoint_dir is None and out is None:
        raise ValueError(
            "gather='none' assembles the kernel nowhere: give checkpoint_dir= or out= to keep "
            "the blocks, or use gather='all' / 'process0'."
        )
    if out is not None:
        out_paths(out, [()])  # checks the name early
    options = Options(_mesh(mesh), progress, checkpoint_dir, accumulate_dtype, gather, out)
    if output_chunk is not None:
        return _chunked_outputs(kernel_fn, output_chunk, batch_size, memory_budget, mesh, options)

    def run(x1: PyTree, x2: PyTree | None = None, params: PyTree = None, **kwargs: Any):
        run.stats = Stats()
        start = time.perf_counter()
        try:
            return _run(x1, x2, params, kwargs, run.stats)
        finally:
            run.stats.wall_s = time.perf_counter() - start

    run.stats = Stats()

    def _run(x1, x2, params, kwargs, stats: Stats):
        params = kernel_fn.default_params if params is None else params
        x1, x2, params, kwargs = host_value((x1, x2, params, kwargs))
        layout = Layout(kernel_fn, x1, params, kwargs)
        if layout.mode != "grid" and x2 is not None and n_examples(x2) != n_examples(x1):
            raise ValueError("A diagonal or traced batch axis needs x1 and x2 of equal size.")
        if layout.mode == "trace" and out is not None:
            raise ValueError(
                "out= writes kernels with an example axis; a traced batch axis (trace_axes "
                "including 0) gives a small kernel: leave out= unset."
            )
        team = Team.of(options.mesh)
        size = batch_size
        while True:
            if size is None:
                budget = memory_budget or _memory.default_budget()
                size = _memory.pick_block_size(kernel_fn, x1, x2, params, kwargs, budget, layout)
                if out is not None:  # a file is for kernels memory should never hold whole
                    size = min(size, _memory.out_block_cap(n_examples(x1)))
                size = _agree(team, size)
            plan = Plan.make(kernel_fn, layout, x1, x2, params, kwargs, size)
            stats.block_size = size
            try:
                return _compute(plan, team, options, stats)
            except jax.errors.JaxRuntimeError as e:
                if (
                    "RESOURCE_EXHAUSTED" not in str(e)
                    or size == 1
                    or batch_size is not None
                    or team.shared
                ):
                    raise
                size //= 2  # back off instead of dying

    return run


def _mesh(mesh: Any) -> jax.sharding.Mesh | None:
    if mesh is None or mesh is False:
        return None
    if mesh is True:
        return jax.make_mesh((jax.device_count(),), ("blocks",))
    if len(mesh.axis_names) != 1:
        raise ValueError(f"batched needs a mesh with one axis, got axes {mesh.axis_names}.")
    return mesh


def _agree(team: Team, size: int) -> int:
    """Process 0's block size, on every process of the team (they must cut the same blocks)."""
    if not team.shared:
        return size
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(size)))


def _settle_method(plan: Plan, team: Team, stats: Stats) -> Plan:
    """The plan with the one method every block program runs: ``auto`` picks it at the block
    shapes (measured on an off-diagonal block when there are several blocks), process 0 decides
    and the others follow."""
    kernel_fn = plan.kernel_fn
    if kernel_fn.method is not Method.AUTO:
        stats.method, stats.method_source = kernel_fn.method.value, "given"
        return plan
    tasks = plan.tasks()
    picker = kernel_fn
    if len(tasks) > 1 and kernel_fn.auto.measure is not False:
        picker = kernel_fn.replace(auto=dataclasses.replace(kernel_fn.auto, measure=True))
    names, sources = [m.value for m in Method], ("estimate", "measured", "wisdom")
    code, times = 0, {}
    if not team.shared or team.process == team.processes[0]:
        (b1, kw1), (b2, kw2) = plan.arguments(next((t for t in tasks if t[0] != t[1]), tasks[0]))
        choice = picker.choose(b1, b2, plan.params, **pair_kwargs(kw1, kw2))
        code = len(sources) * names.index(choice.method.value) + sources.index(choice.source)
        times = dict(choice.times)
    code = _agree(team, code)  # process 0's pick, as its block size
    stats.method, stats.method_source = names[code // 3], sources[code % 3]
    stats.method_times = times
    index = code // 3
    return dataclasses.replace(plan, kernel_fn=kernel_fn.replace(method=names[index]))


def _store(plan: Plan, options: Options) -> BlockStore | None:
    """The checkpoint of this exact kernel (not of the processes or devices computing it)."""
    if options.checkpoint_dir is None:
        return None
    kernel_fn = plan.kernel_fn
    settings = dict(
        method=str(kernel_fn.method),
        trace=kernel_fn.trace_axes,
        diagonal=kernel_fn.diagonal_axes,
        vmap=repr(kernel_fn.vmap_axes),
        sum_params=kernel_fn.sum_params,
        block=plan.size,
        f=getattr(kernel_fn.f, "__qualname__", repr(kernel_fn.f)),
        dtype=str(options.accumulate_dtype),
    )
    extra = (kernel_fn.cotangents, kernel_fn.preconditioner)
    if extra != (None, None):  # a contracted or preconditioned kernel: its arrays are settings
        named = lambda v: getattr(v, "__qualname__", repr(v)) if callable(v) else v
        settings["transforms"] = fingerprint(jax.tree.map(named, extra), {})
    if options.out is not None:  # the blocks live in these files: the checkpoint is theirs
        settings["out"] = [os.path.abspath(p) for p in out_paths(options.out, plan.layout.paths)]
    key = fingerprint((plan.x1, plan.x2, plan.params, plan.kwargs), settings)
    return BlockStore(options.checkpoint_dir, key)


def _sink(
    plan: Plan, team: Team, options: Options, shapes: list, resume: bool = False
) -> tuple[Any, bool]:
    """Where this process puts blocks (``None``: nowhere), and whether blocks are gathered.

    ``resume``: the ``out`` files hold finished blocks already; open them, do not remake them.
    """
    dtypes = [np.dtype(options.accumulate_dtype or s.dtype) for s in shapes]
    full = kernel_shapes(plan, shapes)
    first = team.process == team.processes[0]
    if options.out is None:
        if options.gather == "none":
            return None, False
        keep = options.gather == "all" or first
        return (MemorySink(plan, dtypes, full) if keep else None), True
    paths = out_paths(options.out, plan.layout.paths)
    if options.gather != "none":  # blocks gathered to process 0, which writes the files
        return (FileSink(plan, dtypes, full, paths, create=not resume) if first else None), True
    sink = FileSink(plan, dtypes, full, paths, create=not resume) if first else None
    team.barrier("ntk_zoo.batched: files created")
    if not first:  # every process writes its own blocks into the shared files
        sink = FileSink(plan, dtypes, full, paths, create=False)
    return sink, False


def _compute(plan: Plan, team: Team, options: Options, stats: Stats) -> PyTree | None:
    """Computes this process's share of the blocks, round by round, and delivers them."""
    from tqdm.auto import tqdm

    tasks = plan.tasks()
    store = _store(plan, options)  # keyed by the method asked for (auto's pick may vary)
    plan = _settle_method(plan, team, stats)
    shapes = plan.block_shapes()
    in_file = store is not None and options.out is not None  # the file is the checkpoint
    reused = _blocks_in_file(plan, team, options, store, shapes) if in_file else set()
    tasks = [t for t in tasks if t not in reused]
    stats.loaded += len(reused)
    sink, gathering = _sink(plan, team, options, shapes, resume=bool(reused))
    compute = _local_compute(plan, team)
    owners = [team.owner(k) for k in range(len(tasks))]
    mine_total = sum(o == team.process for o in owners)
    bar = tqdm(
        total=len(tasks) if gathering else mine_total,
        desc="NTK blocks",
        unit="block",
        disable=not options.progress or team.process != team.processes[0],
    )
    block_bytes = sum(math.prod(s.shape) * np.dtype(s.dtype).itemsize for s in shapes)
    try:
        for indices in team.rounds(len(tasks), block_bytes):
            mine = [tasks[k] for k in indices if owners[k] == team.process]
            clock = time.perf_counter()
            leaves = _finished(mine, None if in_file else store, compute, stats)
            stats.compute_s += time.perf_counter() - clock
            if gathering:
                counts = {p: sum(owners[k] == p for k in indices) for p in team.processes}
                clock = time.perf_counter()
                everyone = team.allgather(leaves, counts, shapes)
                stats.gather_s += time.perf_counter() - clock
            else:
                everyone = {team.process: leaves}
            clock = time.perf_counter()
            if sink is not None:
                placed = []
                for p, blocks in everyone.items():
                    owned = [tasks[k] for k in indices if owners[k] == p]
                    for task, block in zip(owned, blocks):
                        sink.put(task, block)
                    placed += owned
                if in_file:  # durable first, then marked: a kill never marks a torn block
                    sink.sync()
                    store.mark(placed)
            stats.place_s += time.perf_counter() - clock
            bar.update(len(indices) if gathering else len(mine))
    except BaseException:
        if isinstance(sink, FileSink):
            sink.close()  # what was written stays; a rerun with checkpoint_dir completes it
        raise
    finally:
        bar.close()
    return _deliver(plan, team, options, sink)


def _blocks_in_file(
    plan: Plan, team: Team, options: Options, store: BlockStore, shapes: list
) -> set[Task]:
    """The blocks a previous run wrote into the ``out`` files (none if the files are gone).

    Every process reads the markers before any process writes one (a barrier), so all agree
    on the blocks left to compute.
    """
    paths = out_paths(options.out, plan.layout.paths)
    dtypes = [np.dtype(options.accumulate_dtype or s.dtype) for s in shapes]
    done = store.done()
    if done and not files_match(paths, kernel_shapes(plan, shapes), dtypes):
        done = set()
        if team.process == team.processes[0]:
            store.forget()
    team.barrier("ntk_zoo.batched: checkpoint read")
    return done & set(plan.tasks())


def _finished(
    mine: list[Task], store: BlockStore | None, compute: Callable, stats: Stats
) -> list[list]:
    """This process's blocks of one round: loaded when saved, else computed (and saved)."""
    saved = {t: store.load(t) for t in mine} if store else {}
    todo = [t for t in mine if saved.get(t) is None]
    stats.computed += len(todo)
    stats.loaded += len(mine) - len(todo)
    fresh = dict(zip(todo, compute(todo))) if todo else {}
    for task in todo:
        leaves = [np.asarray(a) for a in fresh[task]]
        fresh[task] = leaves
        if store:
            store.save(task, leaves)
    return [fresh[t] if saved.get(t) is None else saved[t] for t in mine]


def _deliver(plan: Plan, team: Team, options: Options, sink: Any) -> PyTree | None:
    """The kernel on the processes that asked for it, ``None`` on the others."""
    if sink is not None:
        sink.finish()
    result = sink.result() if sink is not None and options.gather != "none" else None
    if sink is not None and result is None and hasattr(sink, "close"):
        sink.close()
    team.barrier("ntk_zoo.batched: done")  # files complete before anyone opens them
    if result is None and options.out is not None and options.gather == "all":
        result = open_result(out_paths(options.out, plan.layout.paths))
    return None if result is None else jax.tree.unflatten(plan.layout.treedef, result)


def _local_compute(plan: Plan, team: Team) -> Callable[[list[Task]], list[list]]:
    """Computes a list of blocks on this process's devices of the mesh."""
    devices = team.local_devices
    if devices == [None] or plan.layout.mode == "trace":  # traced blocks differ in size
        return lambda todo: [plan.compute(t) for t in todo]
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    local = Mesh(np.array(devices), ("blocks",))
    sharding = NamedSharding(local, PartitionSpec("blocks"))
    replicated = NamedSharding(local, PartitionSpec())

    # params are an argument (replicated), not a closed-over constant baked into the program.
    def stacked(params, x1s, kw1s, x2s, kw2s):
        def single(b1, k1, b2, k2):
            paired = {k: (k1[k], k2[k]) for k in k1}
            return jax.tree.leaves(plan.kernel_fn(b1, b2, params, **paired))

        return jax.vmap(single)(x1s, kw1s, x2s, kw2s)

    compiled = jax.jit(
        stacked, in_shardings=(replicated,) + (sharding,) * 4, out_shardings=sharding
    )

    def compute(todo: list[Task]) -> list[list]:
        results = []
        for g in range(0, len(todo), len(devices)):
            group = todo[g : g + len(devices)]
            args = [plan.arguments(t) for t in group + [group[-1]] * (len(devices) - len(group))]
            stacks = [_stack([a[side][k] for a in args]) for side in (0, 1) for k in (0, 1)]
            host = [np.asarray(a) for a in compiled(plan.params, *stacks)]
            results += [[a[index] for a in host] for index in range(len(group))]
        return results

    return compute


def _stack(trees: list) -> PyTree:
    return jax.tree.map(lambda *a: jnp.stack(a), *trees)


def _chunked_outputs(
    kernel_fn: KernelFn, chunk: int, batch_size, memory_budget, mesh, options: Options
) -> Callable[..., PyTree]:
    """Tiles the output directions too: ``Θ`` of the logits ``c_i`` against ``c_j``.

    Each pair of chunks is one ``batched`` kernel with its own checkpoint subdirectory
    ``chunk_<i>_<j>``; with ``out`` the pairs are written into the file one by one.
    """
    if kernel_fn.trace_axes not in ((), []) or kernel_fn.diagonal_axes not in ((), []):
        raise ValueError("output_chunk needs a kernel with trace_axes=() and diagonal_axes=().")
    if kernel_fn.cotangents is not None or kernel_fn.preconditioner is not None:
        raise ValueError("output_chunk tiles full kernels; it takes no cotangents= or D.")
    f = kernel_fn.f

    def select(params, x, _ntk_outputs, **kwargs):
        return jnp.take(f(params, x, **kwargs), _ntk_outputs, axis=-1)

    select_fn = ntk_fn(
        select,
        method=kernel_fn.method,
        trace_axes=(),
        vmap_axes=kernel_fn.vmap_axes,
        structured=kernel_fn.structured,
        vector_products=kernel_fn.vector_products,
    )

    def run(x1: PyTree, x2: PyTree | None = None, params: PyTree = None, **kwargs: Any):
        params = kernel_fn.default_params if params is None else params
        x1, x2, params, kwargs = host_value((x1, x2, params, kwargs))
        team = Team.of(options.mesh)
        first = team.process == team.processes[0]
        example = jax.eval_shape(
            lambda p: f(p, pad_rows(x1, 0, 1, 1), **side_kwargs(kwargs, 0)), params
        )
        n_out = example.shape[-1]
        n1, n2 = n_examples(x1), n_examples(x1 if x2 is None else x2)
        shape = (n1, n2, n_out, n_out)
        gather = "process0" if options.out is not None else options.gather
        target = None
        if options.out is not None and first:
            dtype = options.accumulate_dtype or example.dtype
            target = np.lib.format.open_memmap(options.out, "w+", dtype, shape)
        elif gather != "none" and (gather == "all" or first):
            target = np.zeros(shape, options.accumulate_dtype or example.dtype)
        starts = list(range(0, n_out, chunk))
        index = [np.minimum(np.arange(s, s + chunk), n_out - 1) for s in starts]
        size = batch_size  # picked from the budget by the first pair, then kept for all
        for i, si in enumerate(starts):
            for j, sj in enumerate(starts):
                directory = options.checkpoint_dir
                if directory is not None:
                    directory = f"{directory}/chunk_{i}_{j}"
                pair = batched(
                    select_fn,
                    batch_size=size,
                    memory_budget=memory_budget,
                    mesh=mesh,
                    progress=options.progress,
                    checkpoint_dir=directory,
                    accumulate_dtype=options.accumulate_dtype,
                    gather=gather,
                )
                sel = (jnp.asarray(index[i]), jnp.asarray(index[j]))
                block = pair(x1, x1 if x2 is None else x2, params, _ntk_outputs=sel, **kwargs)
                size = pair.stats.block_size
                if block is not None and target is not None:
                    ci, cj = min(chunk, n_out - si), min(chunk, n_out - sj)
                    target[..., si : si + ci, sj : sj + cj] = np.asarray(block)[..., :ci, :cj]
        if isinstance(target, np.memmap):
            target.flush()
        team.barrier("ntk_zoo.batched: chunks done")
        if target is None and options.out is not None and options.gather == "all":
            target = open_result([options.out])[0]
        return target

    return run
