"""``Stats``: where one ``batched`` call's time went, on this process."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Stats:
    """Where one call's time went, on this process (``run.stats`` after each call).

    ``compute_s``: computing this process's blocks (loading saved ones and saving new ones
    included); ``gather_s``: exchanging blocks between processes (waiting for the slowest
    included); ``place_s``: putting blocks into the kernel (memory or file); ``wall_s``: the
    whole call; ``computed`` and ``loaded``: this process's blocks computed and read back from
    ``checkpoint_dir``; ``received_bytes``: bytes of other processes' blocks this process
    received (padding included; ``0`` on the processes that do not assemble the kernel);
    ``block_size``: examples per block (given, or picked from the budget); ``method``: the
    method every block program ran; ``method_source``: how it was picked (``"given"``,
    ``"estimate"``, ``"measured"``, ``"wisdom"``; ``auto`` measures when there is more than one
    block, unless ``AutoOptions(measure=False)``); ``method_times``: the measured seconds per
    block of each candidate timed (process 0 decides, the others follow);
    ``method_excluded``: the methods ``auto`` did not time, with why (process 0);
    ``measured_blocks``: blocks computed by ``auto``'s timing calls and kept (one process
    without a mesh), among ``computed``. With
    ``output_chunk``, the times, counts and bytes are summed over the pairs of chunks.
    """

    wall_s: float = 0.0
    compute_s: float = 0.0
    gather_s: float = 0.0
    place_s: float = 0.0
    computed: int = 0
    loaded: int = 0
    received_bytes: int = 0
    block_size: int = 0
    method: str = ""
    method_source: str = ""
    method_times: dict = field(default_factory=dict)
    method_excluded: dict = field(default_factory=dict)
    measured_blocks: int = 0

    def add(self, other: Stats) -> None:
        """Adds ``other``'s times, counts and bytes (one pair of output chunks) to these."""
        counts = ("computed", "loaded", "received_bytes", "measured_blocks")
        for name in ("compute_s", "gather_s", "place_s", *counts):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.block_size = self.block_size or other.block_size
        self.method = self.method or other.method
        self.method_source = self.method_source or other.method_source
        self.method_times = self.method_times or other.method_times
        self.method_excluded = self.method_excluded or other.method_excluded
