"""The roofline cost shared by ``auto`` and the structured contraction planner, in seconds.

A step of kind ``kind`` that does ``flops`` floating-point operations and moves ``bytes`` takes
``overhead + max(flops / rate[kind], bytes / bandwidth)`` seconds, with the rates of the
machine's :class:`CostTable` (``ntk_zoo/core/_calibration.py``): large intermediates are paid for
even when they are cheap in FLOPs, and small batched contractions run far below a large matrix
product's rate.
"""

from __future__ import annotations

from ntk_zoo.core._calibration import CostTable, active_table


def roofline_cost(
    flops: float,
    nbytes: float,
    kind: str = "matmul",
    table: CostTable | None = None,
    steps: float = 1,
) -> float:
    """Estimated seconds of ``steps`` steps of ``kind`` doing ``flops`` and moving ``nbytes``:
    ``steps · overhead + max(flops / rate[kind], nbytes / memory_bytes)`` (a sum for a pass).

    Args:
      flops: floating-point operations.
      nbytes: bytes read and written.
      kind: ``"matmul"`` (large products, convolutions), ``"einsum"`` (small batched
        contractions), ``"memory"`` (elementwise, transposes) or ``"pass"`` (a whole pass over
        a network: compute and memory time add up).
      table: the rates; default the active table of the default backend (``auto``'s).
      steps: how many separate steps (each pays the table's fixed overhead).

    Example:
      >>> from ntk_zoo.core import CostTable, roofline_cost
      >>> t = CostTable("cpu", matmul_flops=1e11, einsum_flops=2e10, memory_bytes=1e10,
      ...               overhead_s=0.0)
      >>> roofline_cost(1e9, 1e3, table=t), roofline_cost(1e9, 1e9, "einsum", table=t)
      (0.01, 0.1)
    """
    return (active_table() if table is None else table).seconds(flops, nbytes, kind, steps)
