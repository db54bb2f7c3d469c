"""Structure rules, one module per family of primitives; importing registers them."""

from ntk_zoo.structured.rules import _elementwise, _indexing, _linear_algebra, _shape

# The dot and convolution rules' module, for benchmarks that set its formulation
# (``benchmarks/conv_grad.py`` swaps ``_kernel_factor`` to time before against after).
linear_algebra = _linear_algebra

__all__ = ["_elementwise", "_indexing", "_linear_algebra", "_shape", "linear_algebra"]
