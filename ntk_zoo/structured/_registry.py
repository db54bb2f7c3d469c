"""The rule registry: one structure rule per primitive, and the exact fallback for the rest."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import jax

from ntk_zoo.structured._ir import Eqn, Var
from ntk_zoo.structured._structure import Structure

# rule(eqn, idx, args) -> Structure. ``args[i]`` is the value of operand ``i`` when it does not
# depend on params, else ``None``; ``idx`` is the position of the param operand.
Rule = Callable[[Eqn, int, list[Any]], Structure]

RULES: dict[str, Rule] = {}
_WARNED: set[str] = set()


def register(*names: str) -> Callable[[Rule], Rule]:
    def wrap(rule: Rule) -> Rule:
        for name in names:
            RULES[name] = rule
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
    if name in _WARNED:
        return
    _WARNED.add(name)
    warnings.warn(
        f"structured_derivatives has no structure rule for the primitive `{name}` applied to a "
        "param; its contribution is computed exactly from that primitive's transpose (a dense "
        "per-example Jacobian for that use, as in Jacobian contraction). Results stay exact.",
        stacklevel=4,
    )


def structure(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    rule = RULES.get(eqn.name)
    if rule is None:
        warn_fallback(eqn.name)
        return pullback(eqn, idx, args)
    return rule(eqn, idx, args)
