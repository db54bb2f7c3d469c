"""The cost estimate of structured derivatives for ``method="auto"``, and the method's entry
in the engine's registry."""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ntk_zoo.core import Counts, NtkMethod, Problem
from ntk_zoo.structured._derivatives import structured_derivatives
from ntk_zoo.structured._plan import plan, timed_steps


def _abstract(fn: Any, *trees: Any) -> Any:
    """``fn(*trees)`` traced with every array leaf abstract (nothing is computed)."""
    leaves, treedef = jax.tree.flatten(trees)
    is_array = [isinstance(x, jax.Array | np.ndarray | np.generic) for x in leaves]

    def call(*arrays):
        it = iter(arrays)
        full = [next(it) if a else x for x, a in zip(leaves, is_array)]
        return fn(*jax.tree.unflatten(treedef, full))

    return jax.eval_shape(call, *[x for x, a in zip(leaves, is_array) if a])


def structured_cost(p: Problem, c: Counts) -> float:
    """Two phases, like Jacobian contraction's: the factors (a forward pass, then ``o``
    transposed passes that carry cotangents of activations only, about one pass each: the
    weight-gradient half of a backward pass is what the einsums replace; ``∂f/∂y`` at every use,
    and every einsum step that involves one side only, e.g. a convolution's patches times
    ``∂f/∂y``), then the steps that combine the two sides; every einsum step is costed on its own
    (its kind, small einsum or matmul, from its shape; the machine's fixed cost per step) on the
    path the contraction takes (``_plan``). With ``x2=None`` the second side's own steps are the
    first's. The einsums are found by tracing the method with a counting einsum (nothing is
    computed), so the estimate follows the method's own choices: per param leaf, contracting
    its uses through their structure or summing their Jacobian factors first (the dense
    factors' einsums are one-sided steps, their contraction a cross step), and the cotangent
    Grams shared between uses (one einsum per group). Seconds on ``c.table``."""
    itemsize = c.itemsize
    factor_flops = (1 + c.o1) * c.fp1 + (0 if p.x2 is None else (1 + c.o2) * c.fp2)
    seconds = [0.0]  # every einsum step
    factors: dict[int, float] = {}

    def counting_einsum(*args, sides):
        operands, subs, out = args[:-1:2], args[1:-1:2], args[-1]
        shapes = tuple(tuple(o.shape) for o in operands)
        subs = tuple(tuple(s) for s in subs)
        path, _ = plan(subs, shapes, tuple(out), itemsize, c.table)
        sizes = {i: n for s, shape in zip(subs, shapes) for i, n in zip(s, shape)}
        owners = [{s} if s else {1, 2} for s in sides]
        for i, j, t in timed_steps(path, subs, tuple(out), sizes, itemsize, c.table):
            merged = owners[i] | owners[j]
            owners = [*owners[:i], *owners[i + 1 : j], *owners[j + 1 :], merged]
            if merged == {2} and p.x2 is None:
                continue  # the same as side 1's step
            seconds[0] += t
        for o in operands:
            factors[id(o)] = math.prod(o.shape)
        return jnp.zeros([sizes[i] for i in out], operands[0].dtype)

    def run(params, x1, x2, kw1, kw2):
        problem = dataclasses.replace(p, params=params, x1=x1, x2=x2, kwargs1=kw1, kwargs2=kw2)
        return structured_derivatives(problem, counting_einsum)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fallbacks warn when the kernel is actually computed
        _abstract(run, p.params, p.x1, p.x2, p.kwargs1, p.kwargs2)
    values = sum(factors.values()) + c.passes_y
    return c.phase(factor_flops, values, "pass") + seconds[0]


STRUCTURED_DERIVATIVES = NtkMethod(
    "structured_derivatives",
    lambda problem, sum_params: structured_derivatives(problem),
    structured_cost,
)
