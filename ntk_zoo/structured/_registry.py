"""The rule registry: one structure rule per primitive, and the exact fallback for the rest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from ntk_zoo.structured._ir import Eqn, Var
from ntk_zoo.structured._structure import Structure
from ntk_zoo.structured._warnings import warn_once


class NotTransposable(Exception):
    """``f``'s linearisation has a part JAX cannot transpose (e.g. a dynamic ``while_loop``)."""


# rule(eqn, idx, args) -> Structure. ``args[i]`` is the value of operand ``i`` when it does not
# depend on params, else ``None``; ``idx`` is the position of the param operand.
Rule = Callable[[Eqn, int, list[Any]], Structure]

RULES: dict[str, Rule] = {}
# Primitives whose rule declared them views: bijections of a param's elements (reshape,
# transpose, sign, dtype). A param reaching its uses only through views is re-expressed in the
# coordinates of the last one (the NTK does not change under a permutation or sign of w).
VIEWS: set[str] = set()


def register(*names: str, view: bool = False) -> Callable[[Rule], Rule]:
    """Registers ``rule(eqn, idx, args) -> Structure`` for the primitives ``names``.

    ``rule`` describes ``∂y/∂w`` of one use of a param ``w`` (operand ``idx`` of ``eqn``) by its
    structure; ``args[i]`` is the value of operand ``i`` when it does not depend on params, else
    ``None``. A rule may return :func:`pullback`'s structure for cases it does not handle.
    ``view=True`` declares that the primitive only permutes, reshapes, negates or casts its one
    operand's elements (a bijection): a param reaching its uses through such primitives is
    described in the coordinates of the last one. A later registration replaces an earlier one.

    Args:
      *names: the primitive names (``jax.core.Primitive.name``).
      view: whether these primitives are views of their operand.

    Returns:
      A decorator that registers the rule and returns it unchanged.

    Example:
      >>> from ntk_zoo.structured import Structure, register
      >>> @register("my_identity_p", view=True)
      ... def my_identity(eqn, idx, args):
      ...     return Structure(trace=tuple((a, a) for a in range(eqn.outputs[0].ndim)))
      >>> from ntk_zoo.structured import RULES, VIEWS
      >>> RULES["my_identity_p"] is my_identity, "my_identity_p" in VIEWS
      (True, True)
      >>> _ = RULES.pop("my_identity_p"); VIEWS.discard("my_identity_p")
    """

    def wrap(rule: Rule) -> Rule:
        for name in names:
            RULES[name] = rule
            if view:
                VIEWS.add(name)
            else:
                VIEWS.discard(name)
        return rule

    return wrap


def pullback(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    """No structure: ``∂f/∂w`` of this use by the primitive's own transpose rule (exact)."""
    w = eqn.inputs[idx]
    assert isinstance(w, Var)

    def apply(w_value: Any) -> list[Any]:
        vals = list(args)
        vals[idx] = w_value
        for i, v in enumerate(vals):
            if v is None:  # another param-dependent operand: its contribution is not ours
                u = eqn.inputs[i]
                vals[i] = jax.numpy.zeros(u.shape, u.dtype)
        return eqn.bind(*vals)

    transpose = jax.linear_transpose(apply, jax.ShapeDtypeStruct(w.shape, w.dtype))
    return Structure(pullback=lambda cts: transpose(list(cts))[0])


def warn_fallback(name: str) -> None:
    warn_once(
        ("no rule", name),
        f"structured_derivatives has no structure rule for the primitive `{name}` applied to a "
        "param; its contribution is computed exactly from that primitive's transpose (a dense "
        "per-example Jacobian for that use, as in Jacobian contraction). Results stay exact.",
        stacklevel=5,
    )


def structure(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    rule = RULES.get(eqn.name)
    if rule is None:
        warn_fallback(eqn.name)
        return pullback(eqn, idx, args)
    return rule(eqn, idx, args)
