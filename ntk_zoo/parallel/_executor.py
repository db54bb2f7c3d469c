"""The executor: computes a plan's blocks over the devices and processes, round by round, with
the checkpoint store, and hands each round to the sink.

Each process computes the blocks its devices own (``Team.owner``), stacked one per local device
under one ``jax.jit`` sharded with ``NamedSharding``; saved blocks are loaded instead, new ones
saved. After each round the blocks travel to the processes that place them (``transfer``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ntk_zoo.parallel._blocks import Plan, Task
from ntk_zoo.parallel._checkpoint import BlockStore
from ntk_zoo.parallel._sink import FileSink, Sink
from ntk_zoo.parallel._stats import Stats
from ntk_zoo.parallel._team import Team

PyTree = Any


def execute(
    plan: Plan,
    team: Team,
    tasks: list[Task],
    shapes: list,
    *,
    sink: Sink | None,
    transfer: str,
    store: BlockStore | None,
    in_file: bool,
    progress: bool,
    stats: Stats,
    ready: dict[Task, list] | None = None,
) -> None:
    """Computes this process's share of ``tasks`` and puts every block it receives into ``sink``.

    ``shapes``: one block's output leaves (``Plan.block_shapes``); ``transfer``: who receives
    other processes' blocks (``Team.exchange``'s ``to``);
    ``in_file``: the sink's file is the checkpoint (blocks are synced, then marked in
    ``store``), else ``store`` saves each block itself; ``ready``: blocks computed already
    (while ``auto`` measured), placed and saved like the others but not computed again.
    """
    from tqdm.auto import tqdm

    compute = _local_compute(plan, team)
    if ready:
        compute = _reusing(compute, dict(ready))
    owners = [team.owner(k) for k in range(len(tasks))]
    sees_all = transfer != "none"
    bar = tqdm(
        total=len(tasks) if sees_all else sum(o == team.process for o in owners),
        desc="NTK blocks",
        unit="block",
        disable=not progress or team.process != team.processes[0],
    )
    block_bytes = sum(math.prod(s.shape) * np.dtype(s.dtype).itemsize for s in shapes)
    try:
        for indices in team.rounds(len(tasks), block_bytes):
            mine = [tasks[k] for k in indices if owners[k] == team.process]
            clock = time.perf_counter()
            leaves = _finished(mine, None if in_file else store, compute, stats)
            stats.compute_s += time.perf_counter() - clock
            counts = {p: sum(owners[k] == p for k in indices) for p in team.processes}
            clock = time.perf_counter()
            held, received = team.exchange(leaves, counts, shapes, transfer)
            stats.gather_s += time.perf_counter() - clock
            stats.received_bytes += received
            clock = time.perf_counter()
            if sink is not None:
                placed = []
                for p, blocks in held.items():
                    owned = [tasks[k] for k in indices if owners[k] == p]
                    for task, block in zip(owned, blocks):
                        sink.put(task, block)
                    placed += owned
                if in_file:  # durable first, then marked: a kill never marks a torn block
                    sink.sync()
                    store.mark(placed)
            stats.place_s += time.perf_counter() - clock
            bar.update(len(indices) if sees_all else len(mine))
    except BaseException:
        if isinstance(sink, FileSink):
            sink.close()  # what was written stays; a rerun with checkpoint_dir completes it
        raise
    finally:
        bar.close()


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


def _reusing(compute: Callable, ready: dict[Task, list]) -> Callable:
    """``compute``, handing back the blocks of ``ready`` instead of computing them."""

    def reuse(todo: list[Task]) -> list[list]:
        fresh = [t for t in todo if t not in ready]
        done = dict(zip(fresh, compute(fresh))) if fresh else {}
        return [ready.pop(t) if t in ready else done[t] for t in todo]

    return reuse


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
