"""What the cost model of ``method="auto"`` measures once per problem, for every method.

FLOPs of ``f`` are counted on its traced program (``dot_general`` and convolutions exactly, one
FLOP per element elsewhere), never from XLA's ``cost_analysis()``, which is wrong on CPU and
GPU. Each method turns these counts into its own estimate (``NtkMethod.cost``), in seconds on
the machine's :class:`CostTable` (``Counts.table``).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import numpy as np

from ntk_zoo import _compat
from ntk_zoo.core._calibration import CostTable, active_table
from ntk_zoo.core._problem import Problem

PyTree = Any


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


def _patches(eqn: Any) -> float:
    """Values of a convolution's patches (every output position × input channel × window
    offset: what structured derivatives' convolution rule writes for it)."""
    lhs, rhs, out = (v.aval.shape for v in (*eqn.invars[:2], eqn.outvars[0]))
    lhs_spec, rhs_spec, out_spec = eqn.params["dimension_numbers"]
    window = math.prod(rhs[d] for d in rhs_spec[2:])
    return math.prod(out) // out[out_spec[1]] * lhs[lhs_spec[1]] * window


def _grad_values(eqn: Any) -> float:
    """Values one per-example weight gradient of a convolution moves for each output of the
    examples (a grouped convolution under ``vmap``): the input and the cotangents read, the
    gradient (one kernel per example) written."""
    lhs, rhs, out = (v.aval.shape for v in (*eqn.invars[:2], eqn.outvars[0]))
    batch = lhs[eqn.params["dimension_numbers"].lhs_spec[0]]
    return math.prod(lhs) + math.prod(out) + batch * math.prod(rhs)


def _forward_counts(f: Any, params: Any, x: Any, kwargs: dict) -> tuple[Any, ...]:
    """FLOPs of one call ``f(params, x, **kwargs)``, the values its equations write, the values
    of its convolutions' patches, and per convolution its ``(FLOPs, values of its per-example
    weight gradient)`` (:func:`_grad_values`)."""
    jaxpr = jax.make_jaxpr(lambda p, x, kw: f(p, x, **kw))(params, x, kwargs)
    flops = values = patches = 0.0
    grads = []
    for eqn, k in _compat.iter_eqns(jaxpr):
        flops += _eqn_flops(eqn) * k
        if eqn.primitive.name == "conv_general_dilated":
            patches += _patches(eqn) * k
            grads.append((_eqn_flops(eqn) * k, _grad_values(eqn) * k))
        values += k * sum(math.prod(getattr(v.aval, "shape", ())) for v in eqn.outvars)
    return flops, values, patches, tuple(grads)


def forward_flops(f: Any, params: Any, x: Any, kwargs: dict) -> float:
    """FLOPs of one call ``f(params, x, **kwargs)``, from its jaxpr."""
    return _forward_counts(f, params, x, kwargs)[0]


class Counts(NamedTuple):
    """Shapes and forward-pass counts of one problem (side 2 equals side 1 when ``x2=None``).

    ``fp``: FLOPs of one forward pass on the side's batch; ``y``: values its equations write;
    ``out``: output values per output leaf; ``n``: examples (1 without ``vmap_axes``); ``o``:
    outputs per example; ``passes_y``: the activations' (co)tangents every pass over the
    network writes (``o·y`` per side); ``table``: the machine's rates (``None``: the active table
    of the default backend); ``patches1``, ``patches2``: the values of the convolutions'
    patches (what structured derivatives' convolution rule extracts, see
    :data:`ntk_zoo.core.PATCHES_SHARE`);
    ``grads1``, ``grads2``: per convolution, ``(FLOPs, values)`` of its per-example weight
    gradient for one output of every example (the FLOPs are its own; the values, the input and
    cotangents read and the per-example kernels written, move at
    :data:`ntk_zoo.core.CONV_GRAD_BYTES_SHARE` of the memory rate); ``conv1``, ``conv2``
    (derived): the FLOPs of the convolutions among ``fp``.
    """

    itemsize: int
    n_params: int
    fp1: float
    y1: float
    fp2: float
    y2: float
    out1: list[int]
    out2: list[int]
    n1: int
    n2: int
    o1: float
    o2: float
    passes_y: float
    table: CostTable | None = None
    patches1: float = 0.0
    patches2: float = 0.0
    grads1: tuple = ()
    grads2: tuple = ()

    @property
    def conv1(self) -> float:
        return sum(flops for flops, _ in self.grads1)

    @property
    def conv2(self) -> float:
        return sum(flops for flops, _ in self.grads2)

    def phase(self, flops: float, values: float, kind: str = "matmul", steps: float = 1) -> float:
        """Estimated seconds of a phase of ``steps`` steps of ``kind`` (``"matmul"``, ``"einsum"``
        or ``"memory"``, see :class:`CostTable`) doing ``flops`` and moving ``values`` values."""
        table = active_table() if self.table is None else self.table
        return table.seconds(flops, values * self.itemsize, kind, steps)


def count(problem: Problem, table: CostTable | None = None) -> Counts:
    """The :class:`Counts` of ``problem`` (``f`` is traced, nothing is computed), to be costed
    on ``table`` (default: the active table of the default backend)."""
    p = problem
    itemsize = np.dtype(p.dtype).itemsize
    n_params = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(p.params))
    fp1, y1, patches1, grads1 = _forward_counts(p.f, p.params, p.x1, p.kwargs1)
    side2 = (fp1, y1, patches1, grads1) if p.x2 is None else None
    fp2, y2, patches2, grads2 = side2 or _forward_counts(p.f, p.params, p.x2, p.kwargs2)
    out1 = [math.prod(leaf.shape) for leaf in jax.tree.leaves(p.fx1)]
    out2 = [math.prod(leaf.shape) for leaf in jax.tree.leaves(p.fx2)]
    n1 = n2 = 1
    if p.vmap is not None:
        n1 = p.vmap.batch_size
        n2 = n1 if p.x2 is None else jax.tree.leaves(p.fx2)[0].shape[p.vmap.out_axes[0]]
    o1, o2 = sum(out1) / n1, sum(out2) / n2  # outputs per example
    # Every pass over the network (VJP, JVP, transposed pass) also writes its activations'
    # tangents or cotangents (``y`` values per forward pass, from the traced program).
    passes_y = o1 * y1 + (0 if p.x2 is None else o2 * y2)
    table = active_table() if table is None else table
    sides = (fp1, y1, fp2, y2, out1, out2, n1, n2, o1, o2)
    return Counts(itemsize, n_params, *sides, passes_y, table, patches1, patches2, grads1, grads2)
