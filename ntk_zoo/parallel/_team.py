"""The processes that share one kernel: who computes which block, and how results meet.

One process (the usual case) is a team of one. After ``jax.distributed.initialize``, a mesh whose
devices belong to several processes makes them a team: block ``k`` of the common block list goes
to mesh device ``k mod D`` (``D`` devices in all), so each process gets a share proportional to its
devices, and each computes its share on its own devices only. Results travel one round of blocks
at a time (at most ``ROUND_BYTES``), so no process holds more than a round in flight, and only to
the processes that need them: to every process with JAX's own
``multihost_utils.process_allgather``, to the first process alone by point-to-point sends (a
``jax.lax.ppermute`` from each other process's first device to the first process's, under
``jax.shard_map`` on a mesh of those two devices: gloo on CPU, the accelerator's interconnect
otherwise), or nowhere.

``jax.device_put`` of a global array onto the first process's devices would be the obvious
gather-to-one, but JAX refuses it across processes (input and target shardings must span the
same devices, JAX 0.10); the coordination service's key-value store would carry the bytes
through gRPC and JAX internals. A ``ppermute`` between two devices is a public collective whose
receiver alone gets the data.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

ROUND_BYTES = 1 << 28  # blocks gathered at once, at most (per process, in bytes)
TRANSFERS = ("all", "first", "none")  # who receives the blocks: every process, process 0, none


@dataclass(frozen=True)
class Team:
    """The devices computing one kernel, in mesh order, and which of them are this process's.

    ``devices`` holds ``None`` for "the default device" when there is no mesh.
    """

    devices: tuple
    process: int
    processes: tuple[int, ...]

    @classmethod
    def of(cls, mesh: jax.sharding.Mesh | None) -> Team:
        me = jax.process_index()
        if mesh is None:
            return cls((None,), me, (me,))
        devices = tuple(mesh.devices.flat)
        processes = tuple(sorted({d.process_index for d in devices}))
        if len(processes) > 1:
            if processes != tuple(range(jax.process_count())):
                raise ValueError(
                    f"batched's mesh spans processes {list(processes)} of "
                    f"{jax.process_count()}: give a mesh over every process's devices "
                    "(jax.make_mesh((jax.device_count(),), ('blocks',)), or mesh=True) or over "
                    "this process's jax.local_devices() only."
                )
            _check_cpu_collectives(devices)
        elif processes != (me,):
            raise ValueError(
                f"batched's mesh holds only devices of process {processes[0]}, not of this "
                f"process ({me}): use jax.local_devices() or a mesh over every process."
            )
        return cls(devices, me, processes)

    @property
    def shared(self) -> bool:
        """Whether several processes compute this kernel together."""
        return len(self.processes) > 1

    @property
    def local_devices(self) -> list:
        """This process's devices of the mesh, in mesh order."""
        return [d for d in self.devices if d is None or d.process_index == self.process]

    def owner(self, index: int) -> int:
        """The process that computes block number ``index`` of the common list."""
        device = self.devices[index % len(self.devices)]
        return self.process if device is None else device.process_index

    def rounds(self, n: int, block_bytes: int) -> list[range]:
        """The block list cut into rounds of ``k`` blocks per device.

        One process: ``k = 1``. Several: each round ends in one gather, whose latency is paid
        once per round, so ``k`` grows until there are about 16 rounds, as long as a round stays
        within ``ROUND_BYTES``.
        """
        d = len(self.devices)
        k = 1
        if self.shared:
            k = max(1, min(-(-n // (16 * d)), ROUND_BYTES // max(1, d * block_bytes)))
        return [range(start, min(start + k * d, n)) for start in range(0, n, k * d)]

    def agree(self, value: int) -> int:
        """The first process's ``value``, on every process of the team."""
        if not self.shared:
            return value
        from jax.experimental import multihost_utils

        return int(multihost_utils.broadcast_one_to_all(np.int32(value)))

    def exchange(
        self, mine: list[list[np.ndarray]], counts: dict[int, int], shapes: list, to: str
    ) -> tuple[dict[int, list], int]:
        """One round's blocks, on the processes ``to`` names (one of ``TRANSFERS``).

        ``mine`` are this process's output leaves per block; ``counts[p]`` how many blocks
        process ``p`` has in the round; ``shapes`` the leaves' shapes and dtypes. Returns the
        blocks this process now holds, by the process that computed them (``"all"``: every
        process's; ``"first"``: every process's on the first process, its own elsewhere;
        ``"none"``: its own), and the bytes it received from the others.
        """
        if not self.shared or to == "none":
            return {self.process: mine}, 0
        if to == "first" and _shard_map() is not None:
            return self._to_first(mine, counts, shapes)
        return self._allgather(mine, counts, shapes)

    def _allgather(self, mine, counts, shapes) -> tuple[dict[int, list], int]:
        """Every process's blocks on every process (a process with fewer pads with zeros)."""
        from jax.experimental import multihost_utils

        width = max(counts.values())
        stacked = [
            np.stack([m[leaf] for m in mine] + [np.zeros(s.shape, s.dtype)] * (width - len(mine)))
            for leaf, s in enumerate(shapes)
        ]
        gathered = multihost_utils.process_allgather(stacked, tiled=False)
        others = len(self.processes) - 1
        received = sum(g.nbytes for g in gathered) * others // len(self.processes)
        blocks = {
            p: [[np.asarray(g[p, k]) for g in gathered] for k in range(counts[p])]
            for p in self.processes
        }
        return blocks, received

    def _to_first(self, mine, counts, shapes) -> tuple[dict[int, list], int]:
        """Every process's blocks on the first process: one send from each other process."""
        first = self.processes[0]
        held, received = {self.process: mine}, 0
        for p in self.processes[1:]:
            if counts[p] == 0 or self.process not in (first, p):
                continue  # a pair's send involves those two processes only
            pair = (self._first_device(first), self._first_device(p))
            sent = _send(pair, mine if self.process == p else None, counts[p], shapes)
            if self.process == first:
                held[p] = [[leaf[k] for leaf in sent] for k in range(counts[p])]
                received += sum(leaf.nbytes for leaf in sent)
        return held, received

    def _first_device(self, process: int) -> Any:
        return next(d for d in self.devices if d.process_index == process)

    def barrier(self, name: str) -> None:
        """Waits for every process of the team (no-op for one)."""
        if self.shared:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)


def _send(pair: tuple, mine: list | None, count: int, shapes: list) -> list[np.ndarray]:
    """``count`` blocks from the device ``pair[1]`` (whose process passes them as ``mine``) to
    ``pair[0]`` (whose process passes ``None``); the receiver gets them, the sender zeros."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    receiving = mine is None
    mesh = Mesh(np.array(pair), ("pair",))
    sharding = NamedSharding(mesh, PartitionSpec("pair"))
    device = pair[0] if receiving else pair[1]
    arrays = []
    for leaf, s in enumerate(shapes):
        local = (
            np.zeros((count, *s.shape), s.dtype) if receiving else np.stack([m[leaf] for m in mine])
        )
        shard = jax.device_put(local, device)
        arrays.append(
            jax.make_array_from_single_device_arrays((2 * count, *s.shape), sharding, [shard])
        )
    out = _sender(mesh)(arrays)
    return [np.asarray(a.addressable_shards[0].data) for a in out] if receiving else []


@functools.cache
def _sender(mesh: Any) -> Any:
    """The compiled send of a pair mesh: the second device's shard to the first device."""
    from jax.sharding import PartitionSpec

    send = lambda leaves: [jax.lax.ppermute(a, "pair", [(1, 0)]) for a in leaves]
    spec = PartitionSpec("pair")
    return jax.jit(_shard_map()(send, mesh=mesh, in_specs=spec, out_specs=spec))


@functools.cache
def _shard_map() -> Any:
    """``jax.shard_map`` (public since JAX 0.7); without it, one warning and all-gathers."""
    found = getattr(jax, "shard_map", None)
    if found is None:
        warnings.warn(
            f"JAX {jax.__version__} has no jax.shard_map: batched sends blocks to every "
            "process (all-gather) even where only process 0 needs them.",
            RuntimeWarning,
            stacklevel=3,
        )
    return found


def _check_cpu_collectives(devices: tuple) -> None:
    if devices[0].platform != "cpu":
        return
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
        raise RuntimeError(
            "batched over several CPU processes needs cross-process CPU collectives: call "
            "jax.config.update('jax_cpu_collectives_implementation', 'gloo') before "
            "jax.distributed.initialize()."
        )


def host_value(tree: Any) -> Any:
    """Host (NumPy) values of the inputs; a global ``jax.Array`` is fetched whole.

    Every process needs every example's values to build its blocks; arrays sharded over several
    processes (``jax.make_array_from_process_local_data``) are gathered once, here.
    """
    from jax.experimental import multihost_utils

    def fetch(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return a

    return jax.tree.map(fetch, tree)
