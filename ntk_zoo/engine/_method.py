"""The NTK algorithms, and when each one wins."""

from __future__ import annotations

import enum


class Method(enum.StrEnum):
    """How the NTK ``Θ(x1, x2) = J(x1) J(x2)ᵀ`` is computed; plain strings are accepted too.

    Notation: ``n`` examples, ``o`` outputs per example, ``p`` parameters, ``[FP]`` the cost of
    one forward pass. All methods give the same numbers (up to floating-point rounding).

    ``JACOBIAN_CONTRACTION`` (``"jacobian_contraction"``)
      Builds per-example Jacobians (``n·o`` VJPs) and contracts them: time
      ``n·o·[FP] + n1·n2·o²·p``, memory ``n·o·p + n1·n2·o²``. Wins when ``o`` is small or the
      traced axes remove it (the default ``trace_axes=(-1,)``), and when the forward pass is costly
      relative to ``p`` (convolutions, attention over many tokens).

    ``NTK_VECTOR_PRODUCTS`` (``"ntk_vector_products"``)
      One VJP then one JVP per kernel column and pair of examples, no Jacobian contraction: time
      ``n1·n2·o·[FP]``, memory about that of Jacobian contraction. Wins when the forward pass is
      cheap relative to ``o·p`` (MLPs) and ``o`` is large with ``trace_axes=()``, or when
      ``vmap_axes`` meets diagonal batch axes (only ``n`` pairs).

    ``STRUCTURED_DERIVATIVES`` (``"structured_derivatives"``)
      The paper's main algorithm (Novak et al., 2022): contracts the structured primitive
      Jacobians without forming them. Not available yet; asking for it raises
      ``NotImplementedError``.

    ``AUTO`` (``"auto"``, the default)
      Picks the method with the lowest estimate from a roofline cost model of ours: each phase
      (Jacobians, contraction, VJPs, JVPs) costs ``max(flops, 48·bytes)``, with the FLOPs of
      ``f`` counted on its traced program, Jacobian sizes from shapes, and the pairing of
      examples implied by ``vmap_axes`` and the diagonal/traced axes. XLA's own
      ``cost_analysis()`` is not used: it is wrong on CPU and GPU.
    """

    JACOBIAN_CONTRACTION = "jacobian_contraction"
    NTK_VECTOR_PRODUCTS = "ntk_vector_products"
    STRUCTURED_DERIVATIVES = "structured_derivatives"
    AUTO = "auto"


def canonicalize_method(method: Method | str) -> Method:
    try:
        return Method(method)
    except ValueError:
        valid = ", ".join(repr(m.value) for m in Method)
        raise ValueError(f"Unknown NTK method {method!r}; valid methods are {valid}.") from None
