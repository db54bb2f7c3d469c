"""Kernels over whole datasets: blocks, memory budgets, devices, progress, checkpoints."""

from ntk_zoo.parallel._batched import batched as batched

__all__ = ["batched"]
