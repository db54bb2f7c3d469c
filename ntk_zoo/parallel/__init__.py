"""Kernels over whole datasets: blocks, memory budgets, devices, processes and hosts,
checkpoints, files larger than memory."""

from ntk_zoo.parallel._batched import BatchedKernelFn as BatchedKernelFn
from ntk_zoo.parallel._batched import batched as batched
from ntk_zoo.parallel._stats import Stats as Stats

__all__ = ["BatchedKernelFn", "Stats", "batched"]
