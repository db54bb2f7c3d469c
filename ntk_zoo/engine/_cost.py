"""The cost model behind ``method="auto"``.

Costs come from shapes and from the traced program of ``f`` (FLOPs of every ``dot_general``
and convolution, one FLOP per element elsewhere), never from XLA's ``cost_analysis()``, which is
wrong on CPU and GPU. Each method is split into phases, and each phase costs as in a roofline
model, ``max(flops, BALANCE · bytes)``:

* Jacobian contraction: the Jacobians (``n·o`` VJPs; writes ``n·o·p`` values), then their
  contraction (``2·n1·n2·o²·p`` FLOPs; reads both Jacobians).
* NTK-vector products: the VJPs ``J(x2)ᵀe`` of the output basis (writes ``n2·o·p`` values), then
  one JVP per kernel column and pair of examples (each about two forward passes; reads them).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ntk_zoo import _compat
from ntk_zoo import _roofline as roofline
from ntk_zoo.engine._axes import kernel_shape, trace_size
from ntk_zoo.engine._problem import Problem
from ntk_zoo.structured import structured_derivatives
from ntk_zoo.structured._plan import plan, steps


def _eqn_flops(eqn: Any) -> float:
    out = eqn.outvars[0].aval
    out_size = math.prod(getattr(out, "shape", ()))
    name = eqn.primitive.name
    if name == "dot_general":
        (lhs_contract, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        return 2.0 * out_size * math.prod(lhs[d] for d in lhs_contract)
    if name == "conv_general_dilated":
        rhs = eqn.invars[1].aval.shape
        rhs_spec = eqn.params["dimension_numbers"].rhs_spec
        window = math.prod(rhs[d] for d in rhs_spec[2:])
        return 2.0 * out_size * rhs[rhs_spec[1]] * window
    return float(sum(math.prod(getattr(v.aval, "shape", ())) for v in eqn.outvars))


def _forward_counts(f: Any, params: Any, x: Any, kwargs: dict) -> tuple[float, float]:
    """FLOPs of one call ``f(params, x, **kwargs)`` and the values its equations write."""
    jaxpr = jax.make_jaxpr(lambda p, x, kw: f(p, x, **kw))(params, x, kwargs)
    flops = values = 0.0
    for eqn, k in _compat.iter_eqns(jaxpr):
        flops += _eqn_flops(eqn) * k
        values += k * sum(math.prod(getattr(v.aval, "shape", ())) for v in eqn.outvars)
    return flops, values


def forward_flops(f: Any, params: Any, x: Any, kwargs: dict) -> float:
    """FLOPs of one call ``f(params, x, **kwargs)``, from its jaxpr."""
    return _forward_counts(f, params, x, kwargs)[0]


class Costs(NamedTuple):
    jacobian_contraction: float
    ntk_vector_products: float
    structured_derivatives: float


def _phase(flops: float, values: float, itemsize: int) -> float:
    return roofline.cost(flops, values * itemsize)


def _abstract(fn: Any, *trees: Any) -> Any:
    """``fn(*trees)`` traced with every array leaf abstract (nothing is computed)."""
    leaves, treedef = jax.tree.flatten(trees)
    is_array = [isinstance(x, jax.Array | np.ndarray | np.generic) for x in leaves]

    def call(*arrays):
        it = iter(arrays)
        full = [next(it) if a else x for x, a in zip(leaves, is_array)]
        return fn(*jax.tree.unflatten(treedef, full))

    return jax.eval_shape(call, *[x for x, a in zip(leaves, is_array) if a])


def _structured_cost(p: Problem, itemsize: int, factor_flops: float, passes_y: float) -> float:
    """Two phases, like Jacobian contraction's: the factors (``∂f/∂y`` at every use, and every
    einsum step that involves one side only, e.g. a convolution's patches times ``∂f/∂y``), then
    the steps that combine the two sides, each at its roofline cost on the path the contraction
    takes (``structured._plan``). With ``x2=None`` the second side's own steps are the first's."""
    cross: list[float] = []
    one_sided = [0.0, 0.0]  # FLOPs, values
    factors: dict[int, float] = {}

    def counting_einsum(*args, sides):
        operands, subs, out = args[:-1:2], args[1:-1:2], args[-1]
        shapes = tuple(tuple(o.shape) for o in operands)
        subs = tuple(tuple(s) for s in subs)
        path, _ = plan(subs, shapes, tuple(out), itemsize)
        sizes = {i: n for s, shape in zip(subs, shapes) for i, n in zip(s, shape)}
        owners = [{s} if s else {1, 2} for s in sides]
        for i, j, flops, moved in steps(path, subs, tuple(out), sizes):
            merged = owners[i] | owners[j]
            owners = [*owners[:i], *owners[i + 1 : j], *owners[j + 1 :], merged]
            if merged == {2} and p.x2 is None:
                continue  # the same as side 1's step
            if len(merged) == 1:
                one_sided[0] += flops
                one_sided[1] += moved
            else:
                cross.append(_phase(flops, moved, itemsize))
        for o in operands:
            factors[id(o)] = math.prod(o.shape)
        return jnp.zeros([sizes[i] for i in out], operands[0].dtype)

    def run(params, x1, x2, kw1, kw2):
        problem = dataclasses.replace(p, params=params, x1=x1, x2=x2, kwargs1=kw1, kwargs2=kw2)
        return structured_derivatives(problem, counting_einsum)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fallbacks warn when the kernel is actually computed
        _abstract(run, p.params, p.x1, p.x2, p.kwargs1, p.kwargs2)
    values = sum(factors.values()) + one_sided[1] + passes_y
    return _phase(factor_flops + one_sided[0], values, itemsize) + sum(cross)


def estimate(problem: Problem) -> Costs:
    p = problem
    itemsize = np.dtype(p.dtype).itemsize
    n_params = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(p.params))
    fp1, y1 = _forward_counts(p.f, p.params, p.x1, p.kwargs1)
    fp2, y2 = (fp1, y1) if p.x2 is None else _forward_counts(p.f, p.params, p.x2, p.kwargs2)
    out1 = [math.prod(leaf.shape) for leaf in jax.tree.leaves(p.fx1)]
    out2 = [math.prod(leaf.shape) for leaf in jax.tree.leaves(p.fx2)]
    n1 = n2 = 1
    if p.vmap is not None:
        n1 = p.vmap.batch_size
        n2 = n1 if p.x2 is None else jax.tree.leaves(p.fx2)[0].shape[p.vmap.out_axes[0]]
    o1, o2 = sum(out1) / n1, sum(out2) / n2  # outputs per example

    def phase(flops: float, values: float) -> float:
        return _phase(flops, values, itemsize)

    # Every pass over the network (VJP, JVP, transposed pass) also writes its activations'
    # tangents or cotangents (``y`` values per forward pass, from the traced program).
    passes_y = o1 * y1 + (0 if p.x2 is None else o2 * y2)

    # Jacobian contraction: jacrev (a forward pass and o VJPs of ~2 passes), then contraction.
    jac_values = sum(out1) * n_params + (0 if p.x2 is None else sum(out2) * n_params) + passes_y
    jac_flops = (1 + 2 * o1) * fp1 + (0 if p.x2 is None else (1 + 2 * o2) * fp2)
    contract_flops = 0.0
    for a, b, ax in zip(jax.tree.leaves(p.fx1), jax.tree.leaves(p.fx2), p.axes):
        entries = math.prod(kernel_shape(a.shape, b.shape, ax)) * trace_size(a.shape, ax)
        contract_flops += 2.0 * entries * n_params
    read_values = (sum(out1) + sum(out2)) * n_params
    jc = phase(jac_flops, jac_values) + phase(contract_flops, read_values)

    # NTK-vector products: o VJPs per x2 example, o JVPs per pair of examples.
    out_axes = [None] * len(out2) if p.vmap is None else p.vmap.out_axes
    jvps = 0.0
    for leaf_out2, ax, b in zip(out2, p.axes, out_axes):
        paired = b is not None and b in ax.trace + ax.diagonal
        jvps += (n1 if paired else n1 * n2) * leaf_out2 / n2
    v_values = sum(out2) * n_params
    vjp = phase((1 + 2 * o2) * fp2, v_values + o2 * y2)
    jvp = phase(jvps * 2 * fp1 / n1, v_values + jvps * y1 / n1)
    # Structured derivatives: a forward pass, then o transposed passes that carry cotangents of
    # activations only (about one pass each: the weight-gradient half of a backward pass is what
    # the einsums replace, and they are counted on their own).
    factor_flops = (1 + o1) * fp1 + (0 if p.x2 is None else (1 + o2) * fp2)
    sd = _structured_cost(p, itemsize, factor_flops, passes_y)
    return Costs(jc, vjp + jvp, sd)
