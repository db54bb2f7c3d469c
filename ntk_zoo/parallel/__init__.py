"""Kernels over whole datasets: blocks, memory budgets, devices, processes and hosts,
checkpoints, files larger than memory."""

from ntk_zoo.parallel._batched import batched as batched

__all__ = ["batched"]
