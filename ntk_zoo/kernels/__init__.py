"""Empirical kernels beside the NTK, built on :class:`ntk_zoo.KernelFn`: the NNGP
(``nngp_fn``), both kernels from one program (``kernel_fn``), and their averages over random
initialisations (``monte_carlo_kernel_fn``)."""

from ntk_zoo.kernels._monte_carlo import monte_carlo_kernel_fn as monte_carlo_kernel_fn
from ntk_zoo.kernels._nngp import EmpiricalKernelFn as EmpiricalKernelFn
from ntk_zoo.kernels._nngp import NngpFn as NngpFn
from ntk_zoo.kernels._nngp import kernel_fn as kernel_fn
from ntk_zoo.kernels._nngp import nngp_fn as nngp_fn

__all__ = [
    "EmpiricalKernelFn",
    "NngpFn",
    "kernel_fn",
    "monte_carlo_kernel_fn",
    "nngp_fn",
]
