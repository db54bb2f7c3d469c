"""ntk_zoo: fast finite-width Neural Tangent Kernels of JAX, Flax and Haiku models.

``import ntk_zoo`` imports only JAX and NumPy; framework adapters import Flax or Haiku lazily.
"""

from ntk_zoo import _xla_flags

# Before anything below runs JAX: the one XLA flag ntk_zoo sets (see _xla_flags for why).
if not _xla_flags.avoid_cpu_miscompilation():
    _xla_flags.warn_if_cpu_exposed()

from ntk_zoo import core as core
from ntk_zoo import data as data
from ntk_zoo import dynamics as dynamics
from ntk_zoo import features as features
from ntk_zoo import kernels as kernels
from ntk_zoo import linearization as linearization
from ntk_zoo import nas as nas
from ntk_zoo import predict as predict
from ntk_zoo import spectrum as spectrum
from ntk_zoo.adapters import from_haiku as from_haiku
from ntk_zoo.adapters import from_linen as from_linen
from ntk_zoo.adapters import from_nnx as from_nnx
from ntk_zoo.core import PureFn as PureFn
from ntk_zoo.engine import AutoOptions as AutoOptions
from ntk_zoo.engine import Choice as Choice
from ntk_zoo.engine import KernelFn as KernelFn
from ntk_zoo.engine import Method as Method
from ntk_zoo.engine import StructuredOptions as StructuredOptions
from ntk_zoo.engine import VectorProductOptions as VectorProductOptions
from ntk_zoo.engine import calibrate as calibrate
from ntk_zoo.engine import clear_wisdom as clear_wisdom
from ntk_zoo.engine import forward_flops as forward_flops
from ntk_zoo.engine import ntk_fn as ntk_fn
from ntk_zoo.engine import ntk_vp_fn as ntk_vp_fn
from ntk_zoo.features import feature_error as feature_error
from ntk_zoo.features import gradient_features as gradient_features
from ntk_zoo.features import kernel_from_features as kernel_from_features
from ntk_zoo.kernels import EmpiricalKernelFn as EmpiricalKernelFn
from ntk_zoo.kernels import NngpFn as NngpFn
from ntk_zoo.kernels import kernel_fn as kernel_fn
from ntk_zoo.kernels import monte_carlo_kernel_fn as monte_carlo_kernel_fn
from ntk_zoo.kernels import nngp_fn as nngp_fn
from ntk_zoo.linearization import linearize as linearize
from ntk_zoo.linearization import taylor_expand as taylor_expand
from ntk_zoo.parallel import batched as batched

__version__ = "0.1.0"

__all__ = [
    "AutoOptions",
    "EmpiricalKernelFn",
    "KernelFn",
    "NngpFn",
    "PureFn",
    "StructuredOptions",
    "VectorProductOptions",
    "Choice",
    "batched",
    "calibrate",
    "clear_wisdom",
    "from_haiku",
    "from_linen",
    "forward_flops",
    "from_nnx",
    "kernel_fn",
    "linearize",
    "monte_carlo_kernel_fn",
    "nngp_fn",
    "Method",
    "ntk_fn",
    "ntk_vp_fn",
    "taylor_expand",
    "feature_error",
    "gradient_features",
    "kernel_from_features",
    "features",
    "kernels",
    "linearization",
    "core",
    "data",
    "dynamics",
    "nas",
    "predict",
    "spectrum",
]
