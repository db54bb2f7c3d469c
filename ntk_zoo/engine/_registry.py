"""The registry of NTK methods: what ``ntk_fn`` dispatches to, and what ``auto`` compares.

A method is an :class:`ntk_zoo.core.NtkMethod` (a compute function and a cost estimate) declared
by the package that implements it. Ties in ``auto`` are broken by ``_cost.TIE_ORDER``.
"""

from __future__ import annotations

from ntk_zoo._compat import unless_missing
from ntk_zoo.core import NtkMethod
from ntk_zoo.engine._method import Method
from ntk_zoo.methods import JACOBIAN_CONTRACTION, NTK_VECTOR_PRODUCTS
from ntk_zoo.structured import STRUCTURED_DERIVATIVES

METHODS: dict[Method, NtkMethod] = {
    Method.JACOBIAN_CONTRACTION: JACOBIAN_CONTRACTION,
    Method.NTK_VECTOR_PRODUCTS: NTK_VECTOR_PRODUCTS,
    Method.STRUCTURED_DERIVATIVES: unless_missing(STRUCTURED_DERIVATIVES, JACOBIAN_CONTRACTION),
}
