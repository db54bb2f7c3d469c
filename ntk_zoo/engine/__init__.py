"""The NTK engine: one ``ntk_fn`` over several algorithms."""

from ntk_zoo.engine._cost import forward_flops as forward_flops
from ntk_zoo.engine._method import Method as Method
from ntk_zoo.engine._ntk import KernelFn as KernelFn
from ntk_zoo.engine._ntk import ntk_fn as ntk_fn
from ntk_zoo.engine._ntk_vector_products import ntk_vp_fn as ntk_vp_fn
