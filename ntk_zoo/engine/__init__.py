"""The NTK engine: one ``ntk_fn`` dispatching to the registered methods (or ``auto``)."""

from ntk_zoo.core import forward_flops as forward_flops
from ntk_zoo.engine._calibrate import calibrate as calibrate
from ntk_zoo.engine._cost import Choice as Choice
from ntk_zoo.engine._method import Method as Method
from ntk_zoo.engine._ntk import KernelFn as KernelFn
from ntk_zoo.engine._ntk import ntk_fn as ntk_fn
from ntk_zoo.engine._registry import METHODS as METHODS
from ntk_zoo.engine._wisdom import AutoOptions as AutoOptions
from ntk_zoo.engine._wisdom import clear_wisdom as clear_wisdom
from ntk_zoo.engine._wisdom import wisdom_path as wisdom_path
from ntk_zoo.methods import VectorProductOptions as VectorProductOptions
from ntk_zoo.methods import ntk_vp_fn as ntk_vp_fn
from ntk_zoo.structured import StructuredOptions as StructuredOptions
