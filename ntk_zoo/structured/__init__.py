"""Structured derivatives: the NTK from the structure of each primitive's Jacobian.

``_ir`` flattens ``f``'s linearisation into equations (``_control_flow`` unrolls its loops and
turns its branches into selections), ``_structure`` describes one primitive's
Jacobian, ``rules/`` holds one structure rule per primitive (added with :func:`register`, which
also declares the "views": reshape-like bijections of a param), ``_derivatives`` records
``∂f/∂y`` at every use of every param and contracts the factors (in the order ``_plan`` picks),
and ``_cost`` estimates that work for ``method="auto"`` (``STRUCTURED_DERIVATIVES``, the
method's entry in the engine's registry).
"""

from ntk_zoo.structured import _control_flow  # noqa: F401  (registers the loop expanders)
from ntk_zoo.structured import rules as rules  # registers the built-in rules
from ntk_zoo.structured._cost import STRUCTURED_DERIVATIVES as STRUCTURED_DERIVATIVES
from ntk_zoo.structured._derivatives import structured_derivatives as structured_derivatives
from ntk_zoo.structured._options import StructuredOptions as StructuredOptions
from ntk_zoo.structured._registry import RULES as RULES
from ntk_zoo.structured._registry import VIEWS as VIEWS
from ntk_zoo.structured._registry import register as register
from ntk_zoo.structured._structure import Structure as Structure

__all__ = [
    "RULES",
    "STRUCTURED_DERIVATIVES",
    "VIEWS",
    "Structure",
    "StructuredOptions",
    "register",
    "rules",
    "structured_derivatives",
]
