"""Where a param's uses are expressed: its *roots*, through views, scalings and disjoint slices.

A param reaching its uses only through bijections of its elements (reshape, transpose, sign,
dtype) and scalings (``w / sqrt(fan_in)`` of the NTK parameterisation) is re-expressed in the
coordinates of the last one: ``J_w = c · J_root`` up to a permutation, so
``Θ_w = c1 · c2 · J_root(x1) J_root(x2)ᵀ``.

A param read only through static slices that are pairwise disjoint (a layer stack ``W[l]``, one
slice per layer, as an unrolled ``scan`` reads it) splits into *parts*, one per slice, each
followed on to its own root: ``J_w`` is the concatenation of the parts' Jacobians over disjoint
sets of ``w``'s elements, so ``Θ_w = Σ_parts Θ_part`` with no cross terms, and each part's uses
keep their structure (a dense layer's ``x ⊗ I``) instead of meeting the slice's.
"""

from __future__ import annotations

from typing import Any

from ntk_zoo.structured import _registry
from ntk_zoo.structured._ir import Eqn, Program, Var

_MAX_INDICES = 1 << 16  # a strided slice's index set is compared element by element up to this


def scalar_factor(program: Program, eqn: Eqn, idx: int) -> Any | None:
    """``c`` when ``eqn`` computes ``c · w`` (``w`` its operand ``idx``) for a scalar ``c``."""
    if eqn.name in ("mul", "div") and len(eqn.inputs) == 2:
        other = eqn.inputs[1 - idx]
        if other.ndim == 0 and not (isinstance(other, Var) and other in program.tangent):
            if eqn.name == "mul":
                return program.value(other)
            if idx == 0:
                return 1 / program.value(other)
    return None


def _follow(program: Program, v: Var, consumers: dict, outputs: set) -> tuple[Var, Any]:
    scale = None
    while v not in outputs:
        users = consumers.get(v, [])
        if len(users) != 1:
            break
        eqn, idx = users[0]
        c = scalar_factor(program, eqn, idx)
        if c is not None:
            scale = c if scale is None else scale * c
        elif eqn.name not in _registry.VIEWS:
            break
        elif eqn.name == "reshape" and eqn.params.get("dimensions") is not None:
            break
        v = eqn.outputs[0]
    return v, scale


def _box(eqn: Eqn) -> list[range]:
    p = eqn.params
    strides = p["strides"] or (1,) * len(p["start_indices"])
    return [range(s, e, k) for s, e, k in zip(p["start_indices"], p["limit_indices"], strides)]


def _ranges_disjoint(a: range, b: range) -> bool:
    if not a or not b or a[-1] < b[0] or b[-1] < a[0]:
        return True
    if a.step == b.step == 1:
        return False
    if len(a) + len(b) > _MAX_INDICES:
        return False  # not compared: treated as overlapping (the slices then stay uses)
    return not set(a) & set(b)


def _disjoint_slices(users: list[tuple[Eqn, int]]) -> bool:
    if not users or any(eqn.name != "slice" for eqn, _ in users):
        return False
    boxes = [_box(eqn) for eqn, _ in users]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            if not any(_ranges_disjoint(ra, rb) for ra, rb in zip(a, b)):
                return False
    return True


def _parts(program: Program, v: Var, scale: Any, consumers: dict, outputs: set) -> list:
    v, own = _follow(program, v, consumers, outputs)
    scale = own if scale is None else scale if own is None else scale * own
    users = consumers.get(v, [])
    if v in outputs or not _disjoint_slices(users):
        return [(v, scale)]
    return [
        part
        for eqn, _ in users
        for part in _parts(program, eqn.outputs[0], scale, consumers, outputs)
    ]


def roots(program: Program) -> tuple[list[list[tuple[Var, Any]]], dict]:
    """Per param (program input), its parts: each the variable its uses are expressed in and
    the scalar relating the two (``None`` for 1); and the program's consumers of each variable."""
    consumers = program.consumers()
    outputs = {v for v in program.outputs if isinstance(v, Var)}
    return [_parts(program, v, None, consumers, outputs) for v in program.inputs], consumers
