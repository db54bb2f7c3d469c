"""Structure rules, one module per family of primitives; importing registers them."""

from ntk_zoo.structured.rules import _elementwise, _indexing, _linear_algebra, _shape

__all__ = ["_elementwise", "_indexing", "_linear_algebra", "_shape"]
