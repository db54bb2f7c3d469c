"""Structured derivatives: the NTK from the structure of each primitive's Jacobian.

``_ir`` flattens ``f``'s linearisation into equations, ``_structure`` describes one primitive's
Jacobian, ``rules/`` holds one structure rule per primitive (registered in ``_registry``), and
``_engine`` records ``∂f/∂y`` at every use of every param and contracts the factors.
"""

from ntk_zoo.structured import rules as rules
from ntk_zoo.structured._engine import structured_derivatives as structured_derivatives
from ntk_zoo.structured._registry import RULES as RULES
from ntk_zoo.structured._structure import Structure as Structure

__all__ = ["RULES", "Structure", "rules", "structured_derivatives"]
