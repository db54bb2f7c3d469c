"""How many kernel blocks a ``batched`` call computes (shared by the batched and process tests)."""

import ntk_zoo
from ntk_zoo._compat import is_tracer


def count_blocks_computed(monkeypatch) -> list:
    """A list that grows by one for every kernel block computed on values (the block shapes
    are also traced once, abstractly: those calls are not counted)."""
    computed = []
    real_call = ntk_zoo.KernelFn.__call__

    def counting(self, *args, **kwargs):
        if not is_tracer(args[0]):
            computed.append(1)
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(ntk_zoo.KernelFn, "__call__", counting)
    return computed
