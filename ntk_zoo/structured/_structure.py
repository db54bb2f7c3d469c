"""How the Jacobian ``∂y/∂w`` of one primitive application looks, without forming it.

A :class:`Structure` says, for an output ``y`` and a param operand ``w`` of one equation::

    ∂y[y...]/∂w[w...] = Π_(a,b) in trace   δ(y_a, w_b)
                      · Π_(a,b,M) in maps  M[y_a, w_b]
                      · Π_(a,b) in diag    δ(y_a, w_b)
                      · D[y_dense..., y_diag..., w_dense...]
                      · [src[y_dense...] == 1 + flat index of w over ``index_w``]   (if ``src``)

Output axes listed nowhere are *broadcast*: the Jacobian is constant along them, so ``∂f/∂y`` is
summed over them before anything else. ``trace`` pairs are identities (the factor ``∂f/∂y`` of
both sides shares one index); ``maps`` are small per-axis matrices (padding, slicing, windows);
``diag`` pairs are identities along which ``D`` varies; ``src`` describes gathers (embedding
lookups): each output element reads at most one param element, and two sides are contracted by
comparing indices instead of forming one-hot matrices.

A structure whose ``pullback`` is set instead says "no structure worth keeping": that use's
contribution ``∂f/∂w = ∂f/∂y · ∂y/∂w`` is computed by the primitive's transpose rule.

A rule may also give ``factor``: the use's Jacobian factor ``∂f/∂y · ∂y/∂w`` for a stack of
cotangents of ``y`` (leading axis), where it has a faster formulation than ``vmap`` of the
primitive's transpose (used when the use is summed densely, ``_choice.choose_dense``), and
with it ``factor_cost``: what that formulation runs (:class:`FactorCost`), for ``auto``'s
estimate to price it instead of the einsum of the structure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class FactorCost(NamedTuple):
    """What a rule's own formulation of a use's Jacobian factor (``Structure.factor``) runs for
    one example and ``o`` cotangents: ``steps`` matrix products that together multiply an
    ``m×k`` block by a ``k×n`` one (``2·m·k·n`` FLOPs in all, their kind by
    :func:`ntk_zoo.core.contraction_kind` of that shape), moving ``values`` values (operands
    laid out, read and written), giving ``out`` values (the factor). ``reads_d``: whether it
    reads the structure's ``d``; where not (a convolution's factor built per filter offset
    from slices of the input), ``d`` is made only if a structured contraction uses it, and the
    estimate does not charge it to this factor."""

    steps: int
    m: int
    k: int
    n: int
    values: float
    out: int
    reads_d: bool = True


@dataclasses.dataclass
class Structure:
    trace: tuple[tuple[int, int], ...] = ()
    maps: tuple[tuple[int, int, Any], ...] = ()
    diag: tuple[tuple[int, int], ...] = ()
    dense_y: tuple[int, ...] = ()
    dense_w: tuple[int, ...] = ()
    d: Any = None  # None means the scalar 1
    src: Any = None  # int array over ``dense_y``; 0 = reads nothing
    index_w: tuple[int, ...] = ()
    pullback: Callable[[Any], Any] | None = None  # cotangent of y -> cotangent of w
    # cotangents of y, stacked on a leading axis -> ∂f/∂y · ∂y/∂w, stacked (see module docstring)
    factor: Callable[[Any], Any] | None = None
    # o (cotangents per example) -> what ``factor`` runs for them, or None: priced as the einsum
    # of the structure (see :class:`FactorCost`)
    factor_cost: Callable[[int], FactorCost | None] | None = None

    @property
    def y_axes_used(self) -> set[int]:
        pairs = [a for a, _ in self.trace] + [a for a, _, _ in self.maps]
        return set(pairs) | {a for a, _ in self.diag} | set(self.dense_y)

    def onehot_d(self, w_shape: tuple[int, ...]) -> tuple[Any, tuple[int, ...]]:
        """``D`` with the index part materialised as a one-hot block: (array, dense_w axes)."""
        if self.d is not None:
            raise NotImplementedError("a structure with both `src` and `d` is not supported")
        return onehot(self.src, [w_shape[b] for b in self.index_w]), self.index_w


def onehot(src: Any, sizes: list[int]) -> jax.Array:
    """``[src == 1 + flat index]`` over param axes of ``sizes``, appended to ``src``'s axes."""
    block = jax.nn.one_hot(src - 1, int(np.prod(sizes, dtype=np.int64)))
    return block.reshape(src.shape + tuple(sizes))


def dense_jacobian(s: Structure, y_shape: tuple, w_shape: tuple, dtype: Any = None) -> jax.Array:
    """The full Jacobian ``y_shape + w_shape`` that ``s`` describes (for tests and small cases)."""
    ny = len(y_shape)
    y_lab = [f"y{a}" for a in range(ny)]
    w_lab = [f"w{b}" for b in range(len(w_shape))]
    for a, b in s.trace + s.diag:
        w_lab[b] = y_lab[a]
    ops: list[tuple[Any, list[str]]] = []
    for a, b, m in s.maps:
        ops.append((m, [y_lab[a], w_lab[b]]))
    if s.src is not None:
        d, dense_w = s.onehot_d(w_shape)
        ops.append((d, [y_lab[a] for a in s.dense_y] + [w_lab[b] for b in dense_w]))
    elif s.d is not None:
        labels = [y_lab[a] for a in s.dense_y] + [y_lab[a] for a, _ in s.diag]
        ops.append((jnp.asarray(s.d), labels + [w_lab[b] for b in s.dense_w]))
    symbols = {}
    sym = lambda lab: symbols.setdefault(lab, len(symbols))
    out = y_lab + [f"w{b}" for b in range(len(w_shape))]
    # Output labels: each w axis paired with a y axis gets its own (diagonal) copy.
    args = []
    for arr, labs in ops:
        args += [arr, [sym(x) for x in labs]]
    for a, b in s.trace + s.diag:
        eye = jnp.eye(y_shape[a], dtype=dtype)
        args += [eye, [sym(y_lab[a]), sym(f"w{b}")]]
    out_sub = [sym(x) for x in out]
    for x in out:  # axes no operand mentions (broadcast y axes, unpaired w axes)
        if not any(symbols[x] in labs for labs in args[1::2]):
            args += [jnp.ones((dict(zip(out, (*y_shape, *w_shape)))[x],), dtype), [sym(x)]]
    return jnp.einsum(*args, out_sub)
