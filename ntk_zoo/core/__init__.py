"""The core layer: what every NTK method and every tool above them shares.

One NTK evaluation is described once (:class:`Problem`: ``f``, its params and inputs, the
canonical output axes, the resolved ``vmap_axes``), checked once (``check_*``) and handed to a
method. The helpers here are the single implementation of each convention: output axes
(``leaf_axes``, ``to_layout``, ``kernel_shape``, ``batch_mode``), ``vmap_axes``
(``canonicalize_vmap_axes``, ``resolve_vmap``, ``per_example_fn``), the
``(value for x1, value for x2)`` keyword convention (``split_kwargs``), a model as
``PureFn`` or ``(f, params)`` (``as_pure_fn``), padded example blocks (``pad_rows``) and sums
of many kernel terms (``tree_sum``); the
kernels of contracted outputs and of preconditioned params as problems of transformed
functions (``contract_outputs``, ``precondition``, ``transformed_problem``,
``path_predicate``). The cost model's shared measurements live here too (``forward_flops``,
``count``, ``Counts``,
``roofline_cost``, and the machine's ``CostTable``: ``active_table``, ``use_table``,
``shipped_tables``, ``shipped_path``, ``cache_path``, ``reset_tables``,
``contraction_kind``), with the contract every method declares to the engine (``NtkMethod``).
Nothing here imports a method, the engine or any tool above it.
"""

from ntk_zoo.core._axes import Axes as Axes
from ntk_zoo.core._axes import LeafAxes as LeafAxes
from ntk_zoo.core._axes import batch_mode as batch_mode
from ntk_zoo.core._axes import canonicalize_axes as canonicalize_axes
from ntk_zoo.core._axes import kernel_shape as kernel_shape
from ntk_zoo.core._axes import leaf_axes as leaf_axes
from ntk_zoo.core._axes import to_layout as to_layout
from ntk_zoo.core._axes import trace_size as trace_size
from ntk_zoo.core._blocks import pad_rows as pad_rows
from ntk_zoo.core._calibration import CONV_GRAD_BYTES_SHARE as CONV_GRAD_BYTES_SHARE
from ntk_zoo.core._calibration import CONV_GRAD_SHARE as CONV_GRAD_SHARE
from ntk_zoo.core._calibration import NARROW_SHARE as NARROW_SHARE
from ntk_zoo.core._calibration import PATCHES_SHARE as PATCHES_SHARE
from ntk_zoo.core._calibration import CostTable as CostTable
from ntk_zoo.core._calibration import active_table as active_table
from ntk_zoo.core._calibration import cache_path as cache_path
from ntk_zoo.core._calibration import contraction_kind as contraction_kind
from ntk_zoo.core._calibration import reset_tables as reset_tables
from ntk_zoo.core._calibration import shipped_path as shipped_path
from ntk_zoo.core._calibration import shipped_tables as shipped_tables
from ntk_zoo.core._calibration import use_table as use_table
from ntk_zoo.core._checks import check_input_pair as check_input_pair
from ntk_zoo.core._checks import check_output_pair as check_output_pair
from ntk_zoo.core._checks import check_outputs as check_outputs
from ntk_zoo.core._checks import check_params as check_params
from ntk_zoo.core._checks import check_params_finite as check_params_finite
from ntk_zoo.core._contract import Contraction as Contraction
from ntk_zoo.core._contract import check_cotangents as check_cotangents
from ntk_zoo.core._contract import contract_outputs as contract_outputs
from ntk_zoo.core._contract import transformed_problem as transformed_problem
from ntk_zoo.core._counts import Counts as Counts
from ntk_zoo.core._counts import count as count
from ntk_zoo.core._counts import forward_flops as forward_flops
from ntk_zoo.core._ntk_method import NtkMethod as NtkMethod
from ntk_zoo.core._precondition import Preconditioned as Preconditioned
from ntk_zoo.core._precondition import path_predicate as path_predicate
from ntk_zoo.core._precondition import path_string as path_string
from ntk_zoo.core._precondition import precondition as precondition
from ntk_zoo.core._problem import Problem as Problem
from ntk_zoo.core._problem import make_problem as make_problem
from ntk_zoo.core._pure_fn import PureFn as PureFn
from ntk_zoo.core._pure_fn import as_pure_fn as as_pure_fn
from ntk_zoo.core._roofline import roofline_cost as roofline_cost
from ntk_zoo.core._sums import tree_sum as tree_sum
from ntk_zoo.core._vmap import ResolvedVmap as ResolvedVmap
from ntk_zoo.core._vmap import VmapAxes as VmapAxes
from ntk_zoo.core._vmap import canonicalize_vmap_axes as canonicalize_vmap_axes
from ntk_zoo.core._vmap import per_example_fn as per_example_fn
from ntk_zoo.core._vmap import resolve as resolve_vmap
from ntk_zoo.core._vmap import split_kwargs as split_kwargs
from ntk_zoo.core._vmap import vmap_in_axes as vmap_in_axes

__all__ = [
    "CONV_GRAD_BYTES_SHARE",
    "CONV_GRAD_SHARE",
    "NARROW_SHARE",
    "PATCHES_SHARE",
    "Axes",
    "Contraction",
    "CostTable",
    "Counts",
    "LeafAxes",
    "NtkMethod",
    "Problem",
    "Preconditioned",
    "PureFn",
    "ResolvedVmap",
    "VmapAxes",
    "active_table",
    "as_pure_fn",
    "batch_mode",
    "cache_path",
    "canonicalize_axes",
    "canonicalize_vmap_axes",
    "check_cotangents",
    "check_input_pair",
    "check_output_pair",
    "check_outputs",
    "check_params",
    "check_params_finite",
    "contract_outputs",
    "contraction_kind",
    "count",
    "forward_flops",
    "kernel_shape",
    "leaf_axes",
    "make_problem",
    "pad_rows",
    "path_predicate",
    "path_string",
    "per_example_fn",
    "precondition",
    "reset_tables",
    "resolve_vmap",
    "roofline_cost",
    "shipped_path",
    "shipped_tables",
    "split_kwargs",
    "to_layout",
    "trace_size",
    "transformed_problem",
    "tree_sum",
    "use_table",
    "vmap_in_axes",
]
