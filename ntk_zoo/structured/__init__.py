"""Structured derivatives: the NTK from the structure of each primitive's Jacobian.

``_ir`` flattens ``f``'s linearisation into equations (``_control_flow`` unrolls its loops and
turns its branches into selections), ``_structure`` describes one primitive's
Jacobian, ``rules/`` holds one structure rule per primitive (added with :func:`register`, which
also declares the "views": reshape-like bijections of a param). ``_derivatives`` runs the
method's stages: ``_factors`` records ``∂f/∂y`` at every use of every param and each use's
structure, ``_operands`` labels them as einsum operands, ``_choice`` chooses per leaf (and
per group of uses with one ``∂f/∂y``) how to contract, ``_contraction`` contracts, each einsum
through a ``_contractor`` (in the order ``_plan`` picks) that runs it or prices it; ``_cost``
estimates the method for ``method="auto"`` with the pricing one (``STRUCTURED_DERIVATIVES``, the
method's entry in the engine's registry). :class:`StructuredOptions` force its choices.
``_kronecker`` reuses the recorded factors for ``gradient_features(projection="structured")``:
:func:`kronecker_features` projects each dense and convolution leaf by ``P_in ⊗ P_out``
through its inputs and output cotangents, split per leaf by :func:`kronecker_split`.
"""

# ``contractor``: the contractor's tuning constants (``LAYOUT_OUT``, ``SWAP_ROWS``,
# ``PAIRS_MIN_S``, ``PAIRS_MIN_SAVING``), for side-by-side measurements such as
# ``benchmarks/layout_ab.py`` and ``benchmarks/pairs_ab.py`` (set on it, read at trace time).
from ntk_zoo.structured import _contractor as contractor
from ntk_zoo.structured import _control_flow  # noqa: F401  (registers the loop expanders)
from ntk_zoo.structured import rules as rules  # registers the built-in rules
from ntk_zoo.structured._cost import STRUCTURED_DERIVATIVES as STRUCTURED_DERIVATIVES
from ntk_zoo.structured._derivatives import structured_derivatives as structured_derivatives
from ntk_zoo.structured._kronecker import KroneckerSplit as KroneckerSplit
from ntk_zoo.structured._kronecker import kronecker_features as kronecker_features
from ntk_zoo.structured._kronecker import kronecker_split as kronecker_split
from ntk_zoo.structured._options import StructuredOptions as StructuredOptions
from ntk_zoo.structured._registry import RULES as RULES
from ntk_zoo.structured._registry import VIEWS as VIEWS
from ntk_zoo.structured._registry import register as register
from ntk_zoo.structured._structure import Structure as Structure
from ntk_zoo.structured._warnings import warn_once as warn_once

__all__ = [
    "KroneckerSplit",
    "RULES",
    "STRUCTURED_DERIVATIVES",
    "VIEWS",
    "Structure",
    "StructuredOptions",
    "contractor",
    "kronecker_features",
    "kronecker_split",
    "register",
    "rules",
    "structured_derivatives",
    "warn_once",
]
