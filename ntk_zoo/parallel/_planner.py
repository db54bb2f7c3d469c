"""The planner: how a kernel is cut before any block is computed.

It picks the block size (given, or the largest whose compiled memory estimate fits the budget),
lists the blocks (``_blocks.Plan``), settles the one method every block program runs (``auto``
measured on one block, as the engine measures it) and names the checkpoint of this exact kernel.
With several processes, process 0 decides and the others follow.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax

from ntk_zoo.engine import KernelFn, Method
from ntk_zoo.parallel import _memory
from ntk_zoo.parallel._blocks import Layout, Plan, Task, n_examples, pair_kwargs
from ntk_zoo.parallel._checkpoint import BlockStore, fingerprint
from ntk_zoo.parallel._sink import out_paths
from ntk_zoo.parallel._stats import Stats
from ntk_zoo.parallel._team import Team

PyTree = Any
SOURCES = ("estimate", "measured", "wisdom")  # how auto's pick was made (``Stats``)


def block_size(
    kernel_fn: KernelFn,
    x1: PyTree,
    x2: PyTree | None,
    params: PyTree,
    kwargs: dict,
    layout: Layout,
    team: Team,
    memory_budget: int | None,
    to_file: bool,
) -> int:
    """The largest block whose compiled memory estimate fits ``memory_budget`` (default: half
    the free memory); at most ``⌈n/4⌉`` examples when the kernel goes ``to_file``."""
    budget = memory_budget or _memory.default_budget()
    size = _memory.pick_block_size(kernel_fn, x1, x2, params, kwargs, budget, layout)
    if to_file:  # a file is for kernels memory should never hold whole
        size = min(size, _memory.out_block_cap(n_examples(x1)))
    return team.agree(size)  # every process must cut the same blocks


def settle_method(
    plan: Plan, team: Team, stats: Stats, pending: list[Task] | None = None
) -> tuple[Plan, dict[Task, list]]:
    """The plan with the one method every block program runs, and the blocks computed while
    measuring (``{task: output leaves}``, to be placed rather than computed again).

    ``auto`` picks the method at the block shapes: measured on off-diagonal blocks when there
    are several blocks, with ``runs`` the block count (a long job also times the methods
    estimated far from the best; a short one times only those that can repay their compile);
    process 0 decides and the others follow. On one process without a mesh, each timing call
    computes another block of ``pending`` (blocks still to compute) and keeps it, and the
    winner's program compiled while measuring runs the other off-diagonal blocks (no second
    compile). Every method is exact, so a block timed on another candidate agrees with the
    winner's to rounding."""
    kernel_fn = plan.kernel_fn
    if kernel_fn.method is not Method.AUTO:
        stats.method, stats.method_source = kernel_fn.method.value, "given"
        return plan, {}
    tasks = plan.tasks()
    picker = kernel_fn
    if len(tasks) > 1 and kernel_fn.auto.measure is not False:
        runs = max(kernel_fn.auto.runs, len(tasks))  # the measured program runs once a block
        picker = kernel_fn.replace(
            auto=dataclasses.replace(kernel_fn.auto, measure=True, runs=runs)
        )
    names = [m.value for m in Method]
    code, times, excluded, program, ready = 0, {}, {}, None, {}
    off = [t for t in tasks if t[0] != t[1]]
    if not team.shared or team.process == team.processes[0]:
        (b1, kw1), (b2, kw2) = plan.arguments(off[0] if off else tasks[0])
        kwargs = pair_kwargs(kw1, kw2)
        local = not team.shared and team.local_devices == [None]
        if picker.auto.measure and local and off:
            todo = [t for t in (off if pending is None else pending) if t[0] != t[1]]
            feed = _feed(plan, todo, ready)
            choice, program = picker._measured(b1, b2, plan.params, kwargs, feed=feed)
        else:
            choice = picker.choose(b1, b2, plan.params, **kwargs)
        code = len(SOURCES) * names.index(choice.method.value) + SOURCES.index(choice.source)
        times, excluded = dict(choice.times), dict(choice.excluded)
    code = team.agree(code)  # process 0's pick, as its block size
    method = Method(names[code // len(SOURCES)])
    stats.method, stats.method_source = method.value, SOURCES[code % len(SOURCES)]
    stats.method_times, stats.method_excluded = times, excluded
    stats.measured_blocks = len(ready)
    if program is not None:
        running = kernel_fn._running(method, program, b1, b2, plan.params, kwargs)
    else:
        running = kernel_fn.replace(method=method)
    return dataclasses.replace(plan, kernel_fn=running), ready


def _feed(plan: Plan, todo: list[Task], ready: dict[Task, list]):
    """Arguments for each timing call: the next block of ``todo`` (its kernel kept in
    ``ready``), or, once every block is done, the first one again (its result dropped)."""
    order = iter(todo)

    def feed(method: Method) -> tuple[tuple, Any]:
        task = next(order, None)
        (b1, kw1), (b2, kw2) = plan.arguments(todo[0] if task is None else task)
        keep = (lambda out: None) if task is None else _keeper(ready, task)
        return (b1, b2, pair_kwargs(kw1, kw2)), keep

    return feed


def _keeper(ready: dict[Task, list], task: Task):
    return lambda out: ready.__setitem__(task, jax.tree.leaves(out))


def checkpoint(
    plan: Plan, directory: str | None, out: str | None, accumulate_dtype: Any
) -> BlockStore | None:
    """The checkpoint of this exact kernel (not of the processes or devices computing it),
    keyed by the method asked for (``auto``'s pick may vary between machines)."""
    if directory is None:
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
        dtype=str(accumulate_dtype),
    )
    extra = (kernel_fn.cotangents, kernel_fn.preconditioner)
    if extra != (None, None):  # a contracted or preconditioned kernel: its arrays are settings
        named = lambda v: getattr(v, "__qualname__", repr(v)) if callable(v) else v
        settings["transforms"] = fingerprint(jax.tree.map(named, extra), {})
    options = (kernel_fn.structured, kernel_fn.vector_products)
    if options != (type(options[0])(), type(options[1])()):  # forced paths round differently
        settings["options"] = [repr(o) for o in options]
    if out is not None:  # the blocks live in these files: the checkpoint is theirs
        settings["out"] = [os.path.abspath(p) for p in out_paths(out, plan.layout.paths)]
    key = fingerprint((plan.x1, plan.x2, plan.params, plan.kwargs), settings)
    return BlockStore(directory, key)
