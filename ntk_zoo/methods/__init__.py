"""Two of the three NTK methods: Jacobian contraction and NTK-vector products.

Each method is a function of a :class:`ntk_zoo.core.Problem` and declares itself to the engine
as a :class:`ntk_zoo.core.NtkMethod` (its compute function and its cost estimate). The third
method, structured derivatives, is the package :mod:`ntk_zoo.structured`.
"""

from ntk_zoo.methods._jacobian_contraction import JACOBIAN_CONTRACTION as JACOBIAN_CONTRACTION
from ntk_zoo.methods._jacobian_contraction import contract as contract
from ntk_zoo.methods._jacobian_contraction import jacobian_contraction as jacobian_contraction
from ntk_zoo.methods._ntk_vector_products import NTK_VECTOR_PRODUCTS as NTK_VECTOR_PRODUCTS
from ntk_zoo.methods._ntk_vector_products import VectorProductOptions as VectorProductOptions
from ntk_zoo.methods._ntk_vector_products import ntk_vector_products as ntk_vector_products
from ntk_zoo.methods._ntk_vector_products import ntk_vp_fn as ntk_vp_fn

__all__ = [
    "JACOBIAN_CONTRACTION",
    "NTK_VECTOR_PRODUCTS",
    "VectorProductOptions",
    "contract",
    "jacobian_contraction",
    "ntk_vector_products",
    "ntk_vp_fn",
]
