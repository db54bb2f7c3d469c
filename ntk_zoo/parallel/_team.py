"""The processes that share one kernel: who computes which block, and how results meet.

One process (the usual case) is a team of one. After ``jax.distributed.initialize``, a mesh whose
devices belong to several processes makes them a team: block ``k`` of the common block list goes
to mesh device ``k mod D`` (``D`` devices in all), so each process gets a share proportional to its
devices, and each computes its share on its own devices only. Results travel with JAX's own
``multihost_utils.process_allgather`` (gloo on CPU, the accelerator's interconnect otherwise), one
round of blocks at a time (at most ``ROUND_BYTES``), so no process holds more than a round in
flight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

ROUND_BYTES = 1 << 28  # blocks gathered at once, at most (per process, in bytes)


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

    def allgather(
        self, mine: list[list[np.ndarray]], counts: dict[int, int], shapes: list
    ) -> dict[int, list]:
        """Every process's blocks of one round, on every process.

        ``mine`` are this process's output leaves per block; ``counts[p]`` how many blocks
        process ``p`` has in the round; ``shapes`` the leaves' shapes and dtypes (a process with
        fewer blocks pads with zeros).
        """
        if not self.shared:
            return {self.process: mine}
        from jax.experimental import multihost_utils

        width = max(counts.values())
        stacked = [
            np.stack([m[leaf] for m in mine] + [np.zeros(s.shape, s.dtype)] * (width - len(mine)))
            for leaf, s in enumerate(shapes)
        ]
        gathered = multihost_utils.process_allgather(stacked, tiled=False)
        return {
            p: [[np.asarray(g[p, k]) for g in gathered] for k in range(counts[p])]
            for p in self.processes
        }

    def barrier(self, name: str) -> None:
        """Waits for every process of the team (no-op for one)."""
        if self.shared:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)


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
