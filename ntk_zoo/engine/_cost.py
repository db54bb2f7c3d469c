"""The cost model behind ``method="auto"``: every registered method's own estimate.

Costs come from shapes and from the traced program of ``f`` (:func:`ntk_zoo.core.count`),
never from XLA's ``cost_analysis()``, which is wrong on CPU and GPU. Each method is split into
phases, and each phase costs as in a roofline model, ``max(flops, BALANCE · bytes)``; each
method declares its phases with its ``NtkMethod.cost`` (see :class:`ntk_zoo.Method`).
"""

from __future__ import annotations

import jax

from ntk_zoo.core import Problem, count
from ntk_zoo.engine._registry import METHODS


def estimate(problem: Problem) -> dict[str, float]:
    """Every method's estimated cost (FLOP-equivalents), in the registry's order."""
    if any(0 in leaf.shape for leaf in jax.tree.leaves((problem.fx1, problem.fx2))):
        return dict.fromkeys((m.value for m in METHODS), 0.0)  # an empty kernel costs nothing
    counts = count(problem)
    return {method.value: spec.cost(problem, counts) for method, spec in METHODS.items()}
