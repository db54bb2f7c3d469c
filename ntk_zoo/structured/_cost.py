"""The cost estimate of structured derivatives for ``method="auto"``, and the method's entry
in the engine's registry."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from ntk_zoo import _compat
from ntk_zoo.core import Counts, NtkMethod, Problem
from ntk_zoo.structured import _warnings
from ntk_zoo.structured._contractor import PricingContractor
from ntk_zoo.structured._derivatives import structured_derivatives


def _traced(fn: Any, program: bool, *trees: Any) -> Callable[[], Any] | None:
    """Traces ``fn(*trees)`` with every array leaf abstract (nothing is computed): with
    ``program``, into a jaxpr, returning a function that replays it on the trees' arrays (in the
    caller's own trace: under ``jit`` the replay is what gets compiled), else by shape only."""
    leaves, treedef = jax.tree.flatten(trees)
    is_array = [isinstance(x, jax.Array | np.ndarray | np.generic) for x in leaves]
    arrays = [x for x, a in zip(leaves, is_array) if a]

    def call(*arrays):
        it = iter(arrays)
        full = [next(it) if a else x for x, a in zip(leaves, is_array)]
        return fn(*jax.tree.unflatten(treedef, full))

    if not program:
        jax.eval_shape(call, *arrays)
        return None
    closed, shapes = jax.make_jaxpr(call, return_shape=True)(*arrays)
    out_def = jax.tree.structure(shapes)
    return lambda: jax.tree.unflatten(out_def, _compat.jaxpr_as_fun(closed)(*arrays))


def _estimate(
    p: Problem, c: Counts, program: bool, sum_params: bool = False
) -> tuple[float, Callable[[], list] | None]:
    """Two phases, like Jacobian contraction's: the factors (a forward pass, then ``o``
    transposed passes that carry cotangents of activations only, about one pass each: the
    weight-gradient half of a backward pass is what the einsums replace; ``∂f/∂y`` at every use,
    and every einsum step that involves one side only, e.g. a convolution's patches times
    ``∂f/∂y``), then the steps that combine the two sides; every einsum step is costed on its own
    (its kind, small einsum or matmul, from its shape; the machine's fixed cost per step) on the
    path the contraction takes (``_plan``). With ``x2=None`` the second side's own steps are the
    first's. The einsums are found by tracing the method with a pricing contractor, so the estimate
    follows the method's own choices: per param leaf, contracting its uses through their
    structure or summing their Jacobian factors first (the dense factors' einsums are one-sided
    steps, their contraction a cross step), and the cotangent Grams shared between uses (one
    einsum per group). Seconds on ``c.table``; with ``program``, also a function that replays
    that trace as the method's result, ``compute(problem, sum_params)``'s (the trace's fallback
    warnings given then)."""
    factor_flops = (1 + c.o1) * c.fp1 + (0 if p.x2 is None else (1 + c.o2) * c.fp2)
    pricing = PricingContractor(c.table, c.itemsize, same=p.x2 is None, compute=program)

    def run(params, x1, x2, kw1, kw2):
        problem = dataclasses.replace(p, params=params, x1=x1, x2=x2, kwargs1=kw1, kwargs2=kw2)
        return structured_derivatives(problem, pricing, sum_params)

    # the method's own warnings are given when the kernel is computed, not when estimated
    with _warnings.deferred() as warned, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = _traced(run, program, p.params, p.x1, p.x2, p.kwargs1, p.kwargs2)
    # the values of the einsums' inputs that the pass writes: not those an einsum step (which
    # counts its own result's write) produced, e.g. a dense Jacobian factor before its Gram
    produced = pricing.produced
    values = sum(n for key, (_, n) in pricing.factors.items() if key not in produced)
    values += c.passes_y
    seconds = c.phase(factor_flops, values, "pass") + pricing.seconds
    # Each convolution's patches, extracted per side by its rule (strided slices of the padded
    # input, stacked: copies that run well below the memory rate, ``core.PATCHES_SHARE``); as an
    # operand, each was counted above only as values written.
    # Not those of a convolution whose dense factor is built per filter offset from slices of
    # its input and that no structured step reads (``PricingContractor.spared``).
    patches = c.patches1 + (0 if p.x2 is None else c.patches2)
    patches = max(0.0, patches - pricing.spared_values())
    seconds += c.phase(0, patches, "patches", steps=0) if patches else 0.0
    if traced is None:
        return seconds, None

    def replay() -> list:
        _warnings.replay(warned, stacklevel=4)
        return traced()

    return seconds, replay


def structured_cost(p: Problem, c: Counts) -> float:
    """The estimated seconds of structured derivatives (see :func:`_estimate`)."""
    return _estimate(p, c, program=False)[0]


STRUCTURED_DERIVATIVES = NtkMethod(
    "structured_derivatives",
    lambda problem, sum_params: structured_derivatives(problem, sum_params=sum_params),
    structured_cost,
    lambda problem, counts, sum_params: _estimate(problem, counts, True, sum_params),
)
