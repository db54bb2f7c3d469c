"""``batched``: whole-dataset kernels in blocks, within a memory budget, over devices, processes
and hosts, into memory or into files larger than memory.

``batched(...)`` settles the destination once (``_destination``: memory, a file or nowhere)
and returns a :class:`BatchedKernelFn`; each call plans (``_planner``: block size, blocks,
method, checkpoint), executes (``_executor``: blocks over devices and processes) and delivers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jax

from ntk_zoo.engine import KernelFn
from ntk_zoo.parallel import _planner
from ntk_zoo.parallel._blocks import Layout, Plan, n_examples
from ntk_zoo.parallel._chunked import chunked, selecting
from ntk_zoo.parallel._destination import Destination
from ntk_zoo.parallel._executor import execute
from ntk_zoo.parallel._stats import Stats
from ntk_zoo.parallel._team import Team, host_value

PyTree = Any


@dataclass(frozen=True)
class Settings:
    """Everything ``batched`` was given but the kernel function (see :func:`batched`)."""

    batch_size: int | None
    memory_budget: int | None
    mesh: jax.sharding.Mesh | None
    progress: bool
    checkpoint_dir: str | None
    output_chunk: int | None
    destination: Destination


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
) -> BatchedKernelFn:
    """Computes ``kernel_fn(x1, x2, params, **kwargs)`` block by block; same signature.

    The examples (axis 0 of ``x1``, ``x2`` and the outputs) are tiled into blocks of any size:
    the last block is padded and trimmed, so nothing needs to divide anything. With
    ``x2=None`` only the blocks on and above the diagonal are computed (``Θ(x2, x1)`` is the
    transpose of ``Θ(x1, x2)``). Finished blocks go to the host (NumPy) or straight into a file,
    so the whole kernel never needs to fit on a device, nor, with ``out``, in memory.

    **Several processes and hosts.** After ``jax.distributed.initialize(...)`` on every process,
    pass a mesh over every process's devices (``mesh=True``): the processes share the block list
    (block ``k`` goes to mesh device ``k mod D``), each computes its blocks on its own devices,
    and results travel a round of blocks at a time (about 16 rounds, at most 256 MiB each) to the
    processes that need them only: to every process (``jax.experimental.multihost_utils.
    process_allgather``) when every process returns the kernel, else to process 0 alone (one
    point-to-point ``ppermute`` per other process), or nowhere (``gather="none"``). Every
    process must call ``batched`` alike, with the same inputs.

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
        it), ``"process0"`` (process 0 does, and only process 0 receives blocks; the others
        return ``None``) or ``"none"`` (nobody assembles it and no block travels: every process
        returns ``None`` and the blocks stay in ``checkpoint_dir`` or ``out``, which one of
        them then needs).
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
      A :class:`BatchedKernelFn`, called as ``(x1, x2=None, params=None, **kwargs)``, giving the
      kernel (``None`` on processes that asked for none, see ``gather``); its read-only
      ``stats`` (a :class:`Stats`) tells where the last call's time went on this process
      (blocks computed and loaded, bytes received, time computing, gathering and placing
      blocks; summed over the pairs of chunks with ``output_chunk``).

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
    destination = Destination.choose(gather, out, checkpoint_dir, accumulate_dtype)
    settings = Settings(
        batch_size,
        memory_budget,
        _mesh(mesh),
        progress,
        checkpoint_dir,
        output_chunk,
        destination,
    )
    return BatchedKernelFn(kernel_fn, settings)


class BatchedKernelFn:
    """``kernel_fn(x1, x2=None, params=None, **kwargs)`` returned by :func:`batched`.

    ``stats`` is the :class:`Stats` of the last call (read-only; a new one each call).
    """

    def __init__(self, kernel_fn: KernelFn, settings: Settings):
        self.kernel_fn = kernel_fn
        self.settings = settings
        self._selecting = None
        if settings.output_chunk is not None:
            self._selecting = selecting(kernel_fn)  # checks the kernel can be chunked
        self._stats = Stats()

    @property
    def stats(self) -> Stats:
        """Where the last call's time went, on this process."""
        return self._stats

    def __call__(
        self, x1: PyTree, x2: PyTree | None = None, params: PyTree = None, **kwargs: Any
    ) -> PyTree | None:
        self._stats = stats = Stats()
        start = time.perf_counter()
        try:
            params = self.kernel_fn.default_params if params is None else params
            x1, x2, params, kwargs = host_value((x1, x2, params, kwargs))
            if self._selecting is not None:
                return chunked(
                    self.kernel_fn,
                    x1,
                    x2,
                    params,
                    kwargs,
                    chunk=self.settings.output_chunk,
                    team=Team.of(self.settings.mesh),
                    destination=self.settings.destination,
                    checkpoint_dir=self.settings.checkpoint_dir,
                    pair=self._pair,
                    stats=stats,
                )
            return self._blocked(x1, x2, params, kwargs, stats)
        finally:
            stats.wall_s = time.perf_counter() - start

    def _blocked(self, x1, x2, params, kwargs: dict, stats: Stats) -> PyTree | None:
        """Plans, executes and delivers; halves an automatic block size on out-of-memory."""
        settings, destination = self.settings, self.settings.destination
        layout = Layout(self.kernel_fn, x1, params, kwargs)
        if layout.mode != "grid" and x2 is not None and n_examples(x2) != n_examples(x1):
            raise ValueError("A diagonal or traced batch axis needs x1 and x2 of equal size.")
        if layout.mode == "trace" and destination.kind == "file":
            raise ValueError(
                "out= writes kernels with an example axis; a traced batch axis (trace_axes "
                "including 0) gives a small kernel: leave out= unset."
            )
        team = Team.of(settings.mesh)
        size = settings.batch_size
        while True:
            if size is None:
                size = _planner.block_size(
                    self.kernel_fn,
                    x1,
                    x2,
                    params,
                    kwargs,
                    layout,
                    team,
                    settings.memory_budget,
                    to_file=destination.kind == "file",
                )
            plan = Plan.make(self.kernel_fn, layout, x1, x2, params, kwargs, size)
            stats.block_size = size
            try:
                return self._run(plan, team, stats)
            except jax.errors.JaxRuntimeError as e:
                if (
                    "RESOURCE_EXHAUSTED" not in str(e)
                    or size == 1
                    or settings.batch_size is not None
                    or team.shared
                ):
                    raise
                size //= 2  # back off instead of dying

    def _run(self, plan: Plan, team: Team, stats: Stats) -> PyTree | None:
        settings, destination = self.settings, self.settings.destination
        store = _planner.checkpoint(
            plan, settings.checkpoint_dir, destination.out, destination.accumulate_dtype
        )
        in_file = store is not None and destination.kind == "file"  # the file is the checkpoint
        reused = set()
        if in_file:
            reused = destination.blocks_in_file(plan, team, store, plan.block_shapes())
        stats.loaded += len(reused)
        saved = store.saved() if store is not None and not in_file else set()
        pending = [t for t in plan.tasks() if t not in reused and t not in saved]
        plan, ready = _planner.settle_method(plan, team, stats, pending)
        shapes = plan.block_shapes()
        sink = destination.open(plan, team, shapes, resume=bool(reused))
        execute(
            plan,
            team,
            [t for t in plan.tasks() if t not in reused],
            shapes,
            sink=sink,
            transfer=destination.transfer,
            store=store,
            in_file=in_file,
            progress=settings.progress,
            stats=stats,
            ready=ready,
        )
        return destination.deliver(plan, team, sink)

    def _pair(self, gather: str, checkpoint_dir: str | None, size: int | None) -> BatchedKernelFn:
        """The blocked kernel function of one pair of output chunks (no file: in memory)."""
        settings = self.settings
        destination = Destination.choose(
            gather, None, checkpoint_dir, settings.destination.accumulate_dtype
        )
        return BatchedKernelFn(
            self._selecting,
            Settings(
                settings.batch_size if size is None else size,
                settings.memory_budget,
                settings.mesh,
                settings.progress,
                checkpoint_dir,
                None,
                destination,
            ),
        )


def _mesh(mesh: Any) -> jax.sharding.Mesh | None:
    if mesh is None or mesh is False:
        return None
    if mesh is True:
        return jax.make_mesh((jax.device_count(),), ("blocks",))
    if len(mesh.axis_names) != 1:
        raise ValueError(f"batched needs a mesh with one axis, got axes {mesh.axis_names}.")
    return mesh
