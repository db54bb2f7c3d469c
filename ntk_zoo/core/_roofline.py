"""The roofline cost shared by ``auto`` and the structured contraction planner.

A step that does ``flops`` floating-point operations and moves ``bytes`` costs
``max(flops, BALANCE · bytes)``: large intermediates are paid for even when they are cheap in
FLOPs (on a CPU, an elementwise pass over a big array is as slow as a matmul many times its
FLOPs).
"""

from __future__ import annotations

# FLOPs per byte moved at which a step turns from memory- to compute-bound (machine balance).
# Measured on a 2-core x86 CPU with the methods suite (python -m benchmarks methods); GPUs
# have a similar balance.
BALANCE = 48.0


def roofline_cost(flops: float, nbytes: float) -> float:
    """The roofline cost of one step: ``max(flops, BALANCE · nbytes)`` (FLOP-equivalents).

    Example:
      >>> from ntk_zoo.core import roofline_cost
      >>> roofline_cost(1e6, 10.0), roofline_cost(10.0, 1e3)
      (1000000.0, 48000.0)
    """
    return max(flops, BALANCE * nbytes)
