"""Where the kernel goes, chosen once when ``batched`` is called: memory, a file, or nowhere.

The choice fixes who receives the blocks (every process, process 0 alone, or nobody: the
``to`` of ``Team.exchange``), which process opens which sink, and what each process returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from ntk_zoo.parallel._blocks import Plan, Task
from ntk_zoo.parallel._checkpoint import BlockStore
from ntk_zoo.parallel._sink import (
    FileSink,
    MemorySink,
    Sink,
    files_match,
    kernel_shapes,
    open_result,
    out_paths,
)
from ntk_zoo.parallel._team import Team

PyTree = Any
GATHER = ("all", "process0", "none")


@dataclass(frozen=True)
class Destination:
    """``kind``: ``"memory"`` (host arrays), ``"file"`` (``out``) or ``"none"`` (the blocks stay
    in ``checkpoint_dir``); ``gather``: who returns the kernel (see :func:`batched`)."""

    kind: str
    gather: str
    out: str | None
    accumulate_dtype: Any

    @classmethod
    def choose(
        cls, gather: str, out: str | None, checkpoint_dir: str | None, accumulate_dtype: Any
    ) -> Destination:
        if gather not in GATHER:
            raise ValueError(f"gather={gather!r}; choose one of {GATHER}.")
        if gather == "none" and checkpoint_dir is None and out is None:
            raise ValueError(
                "gather='none' assembles the kernel nowhere: give checkpoint_dir= or out= to "
                "keep the blocks, or use gather='all' / 'process0'."
            )
        if out is not None:
            out_paths(out, [()])  # checks the name early
        kind = "file" if out is not None else "none" if gather == "none" else "memory"
        return cls(kind, gather, out, accumulate_dtype)

    @property
    def transfer(self) -> str:
        """Who receives other processes' blocks: ``"all"``, ``"first"`` or ``"none"``."""
        if self.gather == "none":
            return "none"  # in memory: nobody assembles; in a file: each writes its own
        if self.kind == "memory" and self.gather == "all":
            return "all"
        return "first"  # process 0 alone places blocks, in its arrays or its files

    def _paths(self, plan: Plan) -> list[str]:
        return out_paths(self.out, plan.layout.paths)

    def _dtypes(self, shapes: list) -> list[np.dtype]:
        return [np.dtype(self.accumulate_dtype or s.dtype) for s in shapes]

    def blocks_in_file(self, plan: Plan, team: Team, store: BlockStore, shapes: list) -> set[Task]:
        """The blocks a previous run wrote into the ``out`` files (none if the files are gone).

        Every process reads the markers before any process writes one (a barrier), so all
        agree on the blocks left to compute.
        """
        paths = self._paths(plan)
        done = store.done()
        if done and not files_match(paths, kernel_shapes(plan, shapes), self._dtypes(shapes)):
            done = set()
            if team.process == team.processes[0]:
                store.forget()
        team.barrier("ntk_zoo.batched: checkpoint read")
        return done & set(plan.tasks())

    def open(self, plan: Plan, team: Team, shapes: list, resume: bool = False) -> Sink | None:
        """Where this process puts blocks (``None``: nowhere).

        ``resume``: the ``out`` files hold finished blocks already; open them, do not remake
        them.
        """
        dtypes, full = self._dtypes(shapes), kernel_shapes(plan, shapes)
        first = team.process == team.processes[0]
        if self.kind == "none":
            return None
        if self.kind == "memory":
            keep = self.gather == "all" or first
            return MemorySink(plan, dtypes, full) if keep else None
        paths = self._paths(plan)
        sink = FileSink(plan, dtypes, full, paths, create=not resume) if first else None
        if self.gather != "none":  # blocks gathered to process 0, which writes the files
            return sink
        team.barrier("ntk_zoo.batched: files created")
        if not first:  # every process writes its own blocks into the shared files
            sink = FileSink(plan, dtypes, full, paths, create=False)
        return sink

    def deliver(self, plan: Plan, team: Team, sink: Sink | None) -> PyTree | None:
        """The kernel on the processes that asked for it, ``None`` on the others."""
        if sink is not None:
            sink.finish()
        result = sink.result() if sink is not None and self.gather != "none" else None
        if sink is not None and result is None and hasattr(sink, "close"):
            sink.close()
        team.barrier("ntk_zoo.batched: done")  # files complete before anyone opens them
        if result is None and self.kind == "file" and self.gather == "all":
            result = open_result(self._paths(plan))
        return None if result is None else jax.tree.unflatten(plan.layout.treedef, result)
