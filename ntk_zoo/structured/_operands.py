"""Labelling operands: the einsums of one param leaf, output leaf by output leaf.

Every axis gets an integer label: the output axes of each side (shared by both sides where
traced or diagonal), the param axes (``w``; where a use's structure pairs an output axis of
``y`` with a param axis, the two share a label), and the axes of ``y`` left dense. A use's side
is ``∂f/∂y`` times its structure's factors; a pair of uses ``(k, l)`` is side 1 of ``k`` with
side 2 of ``l``, their param labels shared so that the einsum contracts them.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ntk_zoo.core import LeafAxes
from ntk_zoo.structured._contractor import Einsum
from ntk_zoo.structured._factors import Leaf, LeafFactors, Use, UseFactors
from ntk_zoo.structured._structure import onehot


class Labels:
    """Integer labels for hashable keys, numbered in order of first request."""

    def __init__(self):
        self._ids: dict[Any, int] = {}

    def __call__(self, key: Any) -> int:
        return self._ids.setdefault(key, len(self._ids))


def side_operands(
    use: Use,
    arrays: UseFactors,
    j: int,
    key: tuple,
    batch: list,
    outs: list,
    w_ndim: int,
    lab: Labels,
) -> list:
    """Operands ``(array, labels)`` of one side of one use, for output leaf ``j``."""
    w = lambda b: lab(("w", b))
    if use.pullback:
        return [(arrays.g[j], batch + outs + [w(b) for b in range(w_ndim)])]
    y_label = {a: w(b) for a, b in use.trace + use.diag}
    y_label |= {a: lab(("y", *key, a)) for a in use.kept_y if a not in y_label}
    ops = [(arrays.g[j], batch + outs + [y_label[a] for a in use.kept_y])]
    for (a, b), m in zip(use.maps, arrays.maps):
        ops.append((m, [*batch, y_label[a], w(b)]))
    if use.has_d:
        d_labels = [y_label[a] for a in use.dense_y] + [w(b) for _, b in use.diag]
        ops.append((arrays.d, batch + d_labels + [w(b) for b in use.dense_w]))
    return ops


class LeafOperands:
    """The operands of one param leaf, output leaf ``j``: per side and use, and the einsums
    that combine them (``key``: a use's index, or ``"dense"`` for its uses summed into one
    Jacobian factor; ``(key, use, arrays)`` names one side of a use)."""

    def __init__(
        self,
        leaf: Leaf,
        f1: LeafFactors,
        f2: LeafFactors,
        j: int,
        axes: LeafAxes,
        batch_axis: int | None,
        lab: Labels,
    ):
        self.leaf, self.j, self.lab = leaf, j, lab
        self.same = f2 is f1
        self.arrays = (f1.uses, f2.uses)
        self.labels = []
        for side in (1, 2):
            labels = {}
            for k in range(axes.ndim):
                if k in axes.trace or k in axes.diagonal:
                    labels[k] = lab(("o", k))
                else:
                    labels[k] = lab(("o", side, k))
            self.labels.append(labels)
        first, second = self.labels
        self.out = [first[k] for k in axes.diagonal]
        self.out += [first[k] for k in axes.free] + [second[k] for k in axes.free]
        self.per_example = [k for k in range(axes.ndim) if k != batch_axis]
        self.batch = [[] if batch_axis is None else [ls[batch_axis]] for ls in self.labels]
        self.traced = {first[k] for k in axes.trace if k != batch_axis}
        self.scales = []
        if leaf.scaled:
            self.scales = [(f1.scale, self.batch[0]), (f2.scale, self.batch[1])]

    def w_labels(self) -> list[int]:
        return [self.lab(("w", b)) for b in range(len(self.leaf.shape))]

    def dense_labels(self, side: int) -> list[int]:
        """The labels of a use's Jacobian factor ``J = ∂f/∂y · ∂y/∂w``: examples, outputs, w."""
        outs = [self.labels[side - 1][k] for k in self.per_example]
        return self.batch[side - 1] + outs + self.w_labels()

    def side(self, side: int, key: Any, use: Use, arrays: UseFactors) -> tuple[list, tuple | None]:
        """One side's operands of one use (``key`` names the use) and its gather, if any."""
        batch = self.batch[side - 1]
        outs = [self.labels[side - 1][k] for k in self.per_example]
        ops = side_operands(
            use, arrays, self.j, (side, key), batch, outs, len(self.leaf.shape), self.lab
        )
        src = None
        if use.has_src:
            ylabels = [self.lab(("y", side, key, a)) for a in use.dense_y]
            src = (arrays.src, batch, ylabels, use)
        return ops, src

    def dense_spec(self, side: int, u: int) -> Einsum | None:
        """The einsum giving use ``u``'s Jacobian factor on ``side``, or None when the use's
        operands do not name every param axis (it then stays structured)."""
        use, arrays = self.leaf.uses[u], self.arrays[side - 1][u]
        ops, src = self.side(side, ("dense", u), use, arrays)
        if src is not None:
            block = onehot(src[0], [self.leaf.shape[b] for b in use.index_w])
            ops.append((block, src[1] + src[2] + [self.lab(("w", b)) for b in use.index_w]))
        out = self.dense_labels(side)
        if not set(out) <= {label for _, labels in ops for label in labels}:
            return None
        return Einsum(ops, out, (side,) * len(ops))

    def gram_labels(self, ys: tuple[dict, dict], shared: frozenset, y_ndim: int) -> list[int]:
        """The labels of a cotangent Gram ``Σ_shared (∂f/∂y)(x1)(∂f/∂y)(x2)``: the output axes
        of both sides (those the kernel traces summed), then the unshared ``y`` axes of side 1
        and of side 2, labelled by ``ys`` (per side, ``y`` axis -> label)."""
        outs = []
        for k in (0, 1):
            outs += self.batch[k]
            outs += [self.labels[k][i] for i in self.per_example]
        outs = [x for x in dict.fromkeys(outs) if x not in self.traced]
        return outs + [y[a] for y in ys for a in range(y_ndim) if a not in shared]

    def gram_spec(self, cts: tuple, shared: frozenset) -> Einsum:
        """The einsum of one group's cotangent Gram."""
        y_ndim = cts[0].ndim - len(self.batch[0]) - len(self.per_example)
        ys = tuple(
            {a: self.lab(("G", a) if a in shared else ("Gy", k, a)) for a in range(y_ndim)}
            for k in (1, 2)
        )
        ops = [
            (ct, self.batch[k] + [self.labels[k][i] for i in self.per_example] + list(y.values()))
            for k, (ct, y) in enumerate(zip(cts, ys))
        ]
        return Einsum(ops, self.gram_labels(ys, shared, y_ndim), (1, 2))

    def use_y_labels(self, side: int, key: Any, use: Use) -> dict:
        """Per output axis of ``use``, its label in the use's einsums (:func:`side_operands`);
        a broadcast axis gets a label of its own (summed)."""
        y_label = {a: self.lab(("w", b)) for a, b in use.trace + use.diag}
        for a in range(use.y_ndim):
            if a not in y_label:
                name = "y" if a in use.kept_y else "bcast"
                y_label[a] = self.lab((name, side, key, a))
        return y_label

    def pair_spec(self, one: tuple, two: tuple, gram: tuple | None = None) -> Einsum:
        """The einsum of ``one`` (side 1) with ``two`` (side 2), each ``(key, use, arrays)``.
        With ``gram = (G, shared)`` (the two uses' group's cotangent Gram, see
        ``_choice.shared_grams``), ``G`` replaces both sides' ``∂f/∂y``. ``shared`` may hold
        ``y`` axes of size 1 that the uses keep or pair with a (size-1) param axis: ``G`` has
        summed them, and their labels left on the uses' other operands are each summed over
        their one element, so the einsum is the same products as without ``G``."""
        operands = list(self.scales)
        sides = [1, 2][: len(self.scales)]
        srcs = []
        if gram is not None:
            g, shared = gram
            ys = tuple(
                self.use_y_labels(side, key, use) for side, (key, use, _) in ((1, one), (2, two))
            )
            operands.append((g, self.gram_labels(ys, shared, one[1].y_ndim)))
            sides.append(0)  # both sides
        for side, (key, use, arrays) in ((1, one), (2, two)):
            ops, src = self.side(side, key, use, arrays)
            if gram is not None:
                ops = ops[1:]  # ∂f/∂y is in the Gram
            operands += ops
            sides += [side] * len(ops)
            if src is not None:
                srcs.append((*src, side))
        if len(srcs) == 2 and srcs[0][3].index_w == srcs[1][3].index_w:
            operands.append(source_gram(srcs[0][:3], srcs[1][:3]))
            sides.append(0)  # both sides
        else:
            for src, batch, ylabels, use, side in srcs:
                sides.append(side)
                block = onehot(src, [self.leaf.shape[b] for b in use.index_w])
                operands.append(
                    (block, batch + ylabels + [self.lab(("w", b)) for b in use.index_w])
                )
        return Einsum(operands, self.out, tuple(sides))


def source_gram(side1: tuple, side2: tuple) -> tuple[jax.Array, list]:
    """``E[..1, ..2] = [src1 == src2 > 0]``: which output pairs read the same param element."""
    (s1, b1, y1), (s2, b2, y2) = side1, side2
    shared = b1 == b2
    lead = len(b1)
    if shared:  # one batch axis for both sides (examples paired 1:1)
        a = s1.reshape(s1.shape + (1,) * len(y2))
        b = s2.reshape(s2.shape[:lead] + (1,) * len(y1) + s2.shape[lead:])
        labels = b1 + y1 + y2
    else:
        a = s1.reshape(s1.shape + (1,) * (len(b2) + len(y2)))
        b = s2.reshape((1,) * (len(b1) + len(y1)) + s2.shape)
        labels = b1 + y1 + b2 + y2
    return ((a == b) & (a > 0)).astype(jnp.float32), labels
