"""Kronecker-projected gradient features: each dense and convolution leaf projected through its
layer's inputs and output cotangents, never through its per-example gradient.

A use of a param ``W`` whose structure (``_structure``) is ``∂y/∂W = D ⊗ I`` — a trace pairing
the output features of ``y`` with ``W``'s "out" axes, a dense block ``D`` over the positions
``t`` of ``y`` (tokens, pixels, the examples of a whole-batch ``f``) and ``W``'s "in" axes, and
nothing else (no diagonal, maps or gathers: ``dot_general`` without batch axes on ``W``, an
ungrouped ``conv_general_dilated``'s kernel) — has the gradient ``G = Σ_t D_t g_tᵀ``
(``d_in × d_out``, ``g = ∂f/∂y``, both recorded by ``_factors``). With ``P = P_in ⊗ P_out``::

    vec(G)ᵀ (P_in ⊗ P_out) = vec(P_inᵀ G P_out) = vec(Σ_t (P_inᵀ D_t)(P_outᵀ g_t)ᵀ)

so each factor is projected first (``D P_in``: ``t × k_in``; ``g P_out``: ``t × k_out``) and the
positions are summed *after* the projection, by one ``(k_in × t)(t × k_out)`` product. A leaf
used several times (shared weights; the ``x @ W`` of an unrolled loop's slice is a part of its
own, ``_roots``) sums the projected products of its uses: the projection is linear in ``G``, and
``G`` is the sum of the uses' gradients. Summing ``D`` or ``g`` over positions or uses *before*
the outer product would be wrong (``(Σ D)(Σ g)ᵀ ≠ Σ D gᵀ``).

Unbiasedness: with independent unit-variance entries, each column ``(a, b)`` of ``P_in ⊗ P_out``
is ``p_a ⊗ q_b`` and ``E[(p_a ⊗ q_b)(p_a ⊗ q_b)ᵀ] = I``, so any ``m`` such columns scaled by
``1/√m`` give ``E[φ(x_i)·φ(x_j)] = ⟨G_i, G_j⟩``. A side may instead be kept exact (``P = I``,
``k`` = its size): then the ``k_in · k_out`` columns carry ``1/√k`` of the random side only. Leaves
are projected independently (their keys), so cross terms between leaves vanish in expectation;
every leaf has at least one random side, so no two leaves put deterministic values in one
column. :func:`kronecker_split` picks the split of ``dim`` per leaf; it is documented there with
the variance.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ntk_zoo.core import Problem
from ntk_zoo.structured._contractor import RUNNING
from ntk_zoo.structured._factors import Leaf, LeafFactors, side_factors
from ntk_zoo.structured._operands import Labels, LeafOperands
from ntk_zoo.structured._registry import NotTransposable
from ntk_zoo.structured._warnings import warn_once


class KroneckerSplit(NamedTuple):
    """How one leaf's ``dim`` columns come from ``P_in ⊗ P_out``.

    ``k_in``, ``k_out``: the columns of each factor; ``exact``: ``"in"``/``"out"`` for a side
    kept exact (``P = I``, ``k`` = its size), else ``None``; ``columns``: how many of the leaf's
    ``dim`` features are used (the first ``columns`` of the row-major ``(a, b)`` grid; the rest
    are zero for this leaf); ``variance``: the relative variance predicted for a rank-one
    gradient's squared norm (``2/k`` per random side and ``4/(k_in k_out)`` for both).
    """

    k_in: int
    k_out: int
    exact: str | None
    columns: int
    variance: float

    @property
    def scale(self) -> float:
        """``1/√m``, ``m`` the number of independent random directions per output element."""
        if self.exact == "in":
            return 1 / math.sqrt(self.columns // self.k_in)
        if self.exact == "out":
            return 1 / math.sqrt(self.columns // self.k_out)
        return 1 / math.sqrt(self.columns)


def kronecker_split(d_in: int, d_out: int, dim: int) -> KroneckerSplit:
    """The split of ``dim`` into ``k_in × k_out`` for a ``d_in × d_out`` leaf.

    For a rank-one gradient ``G = x gᵀ`` (one position) the estimate of ``‖G‖²`` is the product
    of two independent estimates, of ``‖x‖²`` by ``k_in`` directions and of ``‖g‖²`` by
    ``k_out``; its relative variance is ``2/k_in + 2/k_out + 4/(k_in·k_out)`` (Gaussian
    factors), against ``2/dim`` for a dense projection with the same ``dim`` columns. The three
    candidates, the one with the smallest predicted variance kept (ties in this order):

    - both random: ``k_in = ⌈√dim⌉``, ``k_out = ⌈dim/k_in⌉`` (``1/k_in + 1/k_out`` is least at
      ``√dim`` each), the first ``dim`` columns of the grid, scaled by ``1/√dim``: relative
      variance ``≈ 4/√dim`` (0.0625 at ``dim=4096``, against 0.0005 dense);
    - ``in`` exact (``d_in ≤ dim``): ``k_in = d_in``, ``k_out = ⌊dim/d_in⌋``: ``2/k_out``;
    - ``out`` exact (``d_out ≤ dim``): ``k_out = d_out``, ``k_in = ⌊dim/d_out⌋``: ``2/k_in``.

    An exact side wins when it is smaller than about ``2√dim`` (128 at ``dim=4096``: a
    classifier's ten logits, a first layer on small inputs). A gradient of rank ``r > 1`` (``t``
    positions) is estimated with a smaller relative variance, towards the dense one as its
    singular values flatten.

    Example:
      >>> from ntk_zoo.structured import kronecker_split
      >>> kronecker_split(384, 1152, 4096)[:4]  # a ViT-S MLP layer: √dim random columns each
      (64, 64, None, 4096)
      >>> kronecker_split(384, 10, 4096)[:4]  # ten logits: kept exact, 409 random inputs
      (409, 10, 'out', 4090)
    """
    k_in = math.isqrt(dim - 1) + 1 if dim > 1 else 1
    k_out = -(-dim // k_in)
    both = 2 / k_in + 2 / k_out + 4 / (k_in * k_out)
    best = KroneckerSplit(k_in, k_out, None, dim, both)
    if d_in <= dim:
        k = dim // d_in
        best = min(best, KroneckerSplit(d_in, k, "in", d_in * k, 2 / k), key=_variance)
    if d_out <= dim:
        k = dim // d_out
        best = min(best, KroneckerSplit(k, d_out, "out", d_out * k, 2 / k), key=_variance)
    return best


def _variance(split: KroneckerSplit) -> float:
    return split.variance


def kronecker_axes(leaf: Leaf) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """``(in axes, out axes)`` of a leaf whose every use is ``D ⊗ I`` with the same axes, or
    ``None`` (the leaf then takes the dense projection)."""
    axes = None
    for use in leaf.uses:
        if use.pullback or use.diag or use.maps or use.has_src or not use.has_d:
            return None
        ins = tuple(sorted(use.dense_w))
        outs = tuple(sorted(b for _, b in use.trace))
        if not ins or not outs or set(ins) & set(outs) or len(ins) + len(outs) != len(leaf.shape):
            return None
        if axes is not None and axes != (ins, outs):
            return None
        axes = (ins, outs)
    return axes


class _NoFactor(Exception):
    """A use's Jacobian factor could not be formed from the recorded factors."""


def kronecker_features(
    problem: Problem, key: jax.Array, dim: int, sketched: set[int] | None = None
) -> list[jax.Array] | None:
    """Per output leaf, features ``(*lead, dim)`` with ``E[Φ Φᵀ] = J Jᵀ`` (``lead``: the
    output's shape, batch axis first): each dense or convolution leaf (``kronecker_axes``)
    projected by ``P_in ⊗ P_out`` through its inputs and output cotangents; every other leaf
    (or part, ``_roots``) by :func:`count_sketch` of its per-example Jacobian, itself summed
    from the recorded factors. The key of param leaf ``l``'s part ``q`` is
    ``fold_in(fold_in(key, l), q)``; a leaf's ``P_in``, ``P_out`` come from ``fold_in(that, 0)``
    and ``fold_in(that, 1)``, its sketch's columns and signs from ``fold_in(that, 2)`` and
    ``fold_in(that, 3)``.

    Returns ``None`` (after a one-time warning) where structured derivatives cannot record
    the factors (a program JAX cannot transpose): the caller then projects densely. With
    ``sketched``, the param leaves (indices into ``problem.params``'s leaves) that took the
    CountSketch are added to it.
    """
    try:
        factors, leaves = side_factors(problem, problem.x1, problem.kwargs1)
        if sketched is not None:
            fallback = [leaf for leaf in leaves if leaf.uses and kronecker_axes(leaf) is None]
            sketched.update(leaf.owner for leaf in fallback)
        return _features(problem, key, dim, factors.leaves, leaves)
    except (NotTransposable, _NoFactor) as e:
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        warn_once(
            ("kronecker features", reason),
            'gradient_features(projection="structured"): the layers\' factors could not be '
            f"recorded ({reason}); every leaf takes the dense Gaussian projection instead.",
            stacklevel=4,
        )
        return None


def _lead_shapes(problem: Problem) -> list[tuple[int, ...]]:
    shapes = []
    for j, leaf in enumerate(jax.tree.leaves(problem.fx1)):
        s = tuple(leaf.shape)
        if problem.vmap is not None and s:
            b = problem.vmap.out_axes[j] % len(s)
            s = (s[b], *s[:b], *s[b + 1 :])
        shapes.append(s)
    return shapes


def _features(problem, key, dim, arrays: list[LeafFactors], leaves: list[Leaf]):
    vmapped = problem.vmap is not None
    part = [sum(leaf.owner == other.owner for other in leaves[:i]) for i, leaf in enumerate(leaves)]
    live = [i for i, leaf in enumerate(leaves) if leaf.uses]
    draws = _Draws(key, [(leaves[i].owner, part[i]) for i in live])
    # pass 1: what each leaf draws (and the fallback leaves' Jacobians); pass 2, after every
    # draw of one shape is made at once: the features
    plans = []
    for j, lead in enumerate(_lead_shapes(problem)):
        for slot, i in enumerate(live):
            leaf, a = leaves[i], arrays[i]
            axes = kronecker_axes(leaf)
            if axes is None:
                jac = _jacobian(problem, leaf, a, j)
                rows = jac.reshape(math.prod(lead), math.prod(leaf.shape))
                s = rows.shape[1]
                column = draws.request(slot, 2, "randint", (s,), jnp.int32, dim)
                sign = draws.request(slot, 3, "rademacher", (s,), rows.dtype)
                plans.append((j, i, (rows, column, sign)))
            else:
                split, d_in, d_out = _split(leaf, axes, dim)
                dtype = a.uses[0].g[j].dtype
                p_in = p_out = None
                if split.exact != "in":
                    p_in = draws.request(slot, 0, "normal", (d_in, split.k_in), dtype)
                if split.exact != "out":
                    p_out = draws.request(slot, 1, "normal", (d_out, split.k_out), dtype)
                plans.append((j, i, (split, d_in, d_out, p_in, p_out)))
    draws.draw()
    out = []
    for j, lead in enumerate(_lead_shapes(problem)):
        total = jnp.zeros((*lead, dim), problem.dtype)
        for pj, i, plan in plans:
            if pj != j:
                continue
            leaf, a = leaves[i], arrays[i]
            if len(plan) == 3:  # a sketched leaf
                rows, column, sign = plan
                phi = _sketch(rows, draws[column], draws[sign], dim).reshape(*lead, dim)
            else:
                split, d_in, d_out, p_in, p_out = plan
                p_in = None if p_in is None else draws[p_in]
                p_out = None if p_out is None else draws[p_out]
                phi = _kronecker(leaf, a, j, split, d_in, d_out, p_in, p_out, dim, vmapped)
            if a.scale is not None:
                s = a.scale.astype(phi.dtype)
                phi = phi * s.reshape(s.shape + (1,) * (phi.ndim - s.ndim))
            total = total + phi.astype(total.dtype)
        out.append(total)
    return out


DRAW_BLOCK = 1 << 20  # elements drawn at once (several leaves, or one larger)


class _Draws:
    """The random arrays of every leaf, drawn together: each level of ``fold_in`` for all
    leaves at once, and one draw per (kind, dtype, size) ``jax.vmap``-ed over the leaves (and
    sides) that need it, each drawn flat and reshaped.

    The values are exactly those of drawing leaf by leaf: ``vmap`` of a key's hash is the same
    hash, elementwise, and a draw's values depend on its size, not its shape. With
    ``jax_threefry_partitionable`` (JAX's default) element ``i`` of a draw depends on ``i``
    only, so the sketches' small draws (columns, signs) are one draw of the largest size,
    each leaf taking its prefix. Why: XLA inlines every ``threefry`` call as its own loop of
    fused kernels, and drawn leaf by leaf (keys, ``P_in``, ``P_out``, columns, signs) they
    were most of the compile time (ARCHITECTURE.md, "Structured projections").
    """

    def __init__(self, key: jax.Array, owner_parts: list[tuple[int, int]]):
        self.key = key
        self.owner_parts = owner_parts
        self.requests: dict[tuple, tuple] = {}  # (slot, fold) -> (kind, shape, dtype, arg)
        self.values: dict[tuple, jax.Array] = {}

    def request(self, slot: int, fold: int, kind: str, shape: tuple, dtype, arg=None) -> tuple:
        """A handle to ``kind``'s draw of ``shape`` from ``fold_in(key of slot, fold)``."""
        self.requests[(slot, fold)] = (kind, tuple(shape), jnp.dtype(dtype), arg)
        return (slot, fold)

    def draw(self) -> None:
        if not self.requests:
            return
        handles = list(self.requests)
        # fold_in(fold_in(fold_in(key, owner), part), fold) of every request: the three levels
        # one loop over one vmapped hash
        data = np.asarray([(*self.owner_parts[slot], fold) for slot, fold in handles], np.uint32)
        fold_in = jax.vmap(jax.random.fold_in)
        start = jnp.broadcast_to(self.key, (len(handles),))
        keys = lax.scan(lambda k, d: (fold_in(k, d), None), start, data.T)[0]
        prefix = jax.config.jax_threefry_partitionable
        groups: dict[tuple, list[int]] = {}
        for t, handle in enumerate(handles):
            kind, shape, dtype, arg = self.requests[handle]
            size = math.prod(shape) if kind == "normal" or not prefix else None
            groups.setdefault((kind, dtype, arg, size), []).append(t)
        for (kind, dtype, arg, size), members in groups.items():
            if size is None:
                size = max(math.prod(self.requests[handles[t]][1]) for t in members)
            draw = partial(_draw, kind=kind, shape=(size,), dtype=dtype, arg=arg)
            self._store(draw, size, keys, handles, members)

    def _store(self, draw, size: int, keys, handles, members: list[int]) -> None:
        # at most DRAW_BLOCK elements drawn at once (the temporaries of drawing leaf by leaf):
        # the blocks of a larger group are one loop, one hash to compile
        per = max(DRAW_BLOCK // size, 1)
        index = np.asarray(members)
        if len(members) <= per:
            values = jax.vmap(draw)(keys[index])
        else:
            blocks = -(-len(members) // per)
            index = np.concatenate([index, np.full(blocks * per - len(members), index[0])])
            values = lax.map(jax.vmap(draw), keys[index].reshape(blocks, per))
            values = values.reshape(blocks * per, size)
        for row, t in enumerate(members):
            shape = self.requests[handles[t]][1]
            self.values[handles[t]] = values[row, : math.prod(shape)].reshape(shape)

    def __getitem__(self, handle: tuple) -> jax.Array:
        return self.values[handle]


def _draw(key, kind, shape, dtype, arg):
    if kind == "normal":
        return jax.random.normal(key, shape, dtype)
    if kind == "randint":
        return jax.random.randint(key, shape, 0, arg)
    return jax.random.rademacher(key, shape, dtype)


def count_sketch(rows: jax.Array, key: jax.Array, dim: int) -> jax.Array:
    """``rows @ S``, ``S`` a ``(s, dim)`` CountSketch: element ``i`` of a leaf goes to one
    column ``h(i)``, uniform, with a sign ``σ(i) = ±1`` (from ``fold_in(key, 2)``, ``3``).

    ``E[(S a)·(S b)] = a·b`` and ``Var = (|a|²|b|² + (a·b)² - 2 Σ_i a_i² b_i²) / dim``, never
    more than a dense Gaussian projection's ``(|a|²|b|² + (a·b)²) / dim``; it costs one
    scatter-add of the ``s`` elements per example and ``2s`` draws per call, against
    ``2·s·dim`` FLOPs per example and ``s·dim`` draws for the dense projection. Unscaled.
    """
    s = rows.shape[1]
    column = jax.random.randint(jax.random.fold_in(key, 2), (s,), 0, dim)
    sign = jax.random.rademacher(jax.random.fold_in(key, 3), (s,), rows.dtype)
    return _sketch(rows, column, sign, dim)


def _sketch(rows: jax.Array, column: jax.Array, sign: jax.Array, dim: int) -> jax.Array:
    return jnp.zeros((rows.shape[0], dim), rows.dtype).at[:, column].add(rows * sign[None])


def _jacobian(problem: Problem, leaf: Leaf, a: LeafFactors, j: int) -> jax.Array:
    """The per-example Jacobian of one leaf (or part) in its root coordinates, ``(*lead,
    *leaf.shape)``: its uses' Jacobian factors summed (by the primitives' transposes where
    recorded, else by the einsum of the use's structure)."""
    total = None
    operands = None
    for u, (use, arrays) in enumerate(zip(leaf.uses, a.uses)):
        if use.pullback:
            term = arrays.g[j]
        elif arrays.j is not None:
            term = arrays.j[j]
        else:
            if operands is None:
                batch_axis = None if problem.vmap is None else problem.vmap.out_axes[j]
                axes = problem.axes[j]
                operands = LeafOperands(leaf, a, a, j, axes, batch_axis, Labels())
            spec = operands.dense_spec(1, u)
            if spec is None:
                raise _NoFactor(f"a use of a param of shape {leaf.shape} has no Jacobian factor")
            term = RUNNING.factor(spec, None)
        total = term if total is None else total + term
    return total


def _split(leaf: Leaf, axes: tuple, dim: int) -> tuple[KroneckerSplit, int, int]:
    ins, outs = axes
    d_in = math.prod(leaf.shape[b] for b in ins)
    d_out = math.prod(leaf.shape[b] for b in outs)
    return kronecker_split(d_in, d_out, dim), d_in, d_out


def _kronecker(leaf: Leaf, a: LeafFactors, j: int, split, d_in, d_out, p_in, p_out, dim, vmapped):
    """``vec(G)ᵀ (P_in ⊗ P_out)`` of one leaf (or part), scaled, padded to ``dim`` columns
    (``P_in``/``P_out`` ``None`` for a side kept exact)."""
    nb = 1 if vmapped else 0
    total = None
    for use, arrays in zip(leaf.uses, a.uses):
        d = arrays.d  # (examples?, *dense_y, *dense_w)
        ny = len(use.dense_y)
        order = sorted(range(len(use.dense_w)), key=lambda t: use.dense_w[t])
        d = jnp.transpose(d, (*range(nb + ny), *(nb + ny + t for t in order)))
        positions = math.prod(d.shape[nb : nb + ny])
        d = d.reshape(*d.shape[:nb], positions, d_in)
        g = arrays.g[j]  # (*lead, *kept_y)
        lead = g.ndim - len(use.kept_y)
        where = {axis: lead + t for t, axis in enumerate(use.kept_y)}
        y_in = [where[axis] for axis in use.dense_y]
        y_out = [where[axis] for axis, _ in sorted(use.trace, key=lambda ab: ab[1])]
        g = jnp.transpose(g, (*range(lead), *y_in, *y_out))
        g = g.reshape(*g.shape[:lead], positions, d_out)
        x = d if p_in is None else d @ p_in  # (examples?, t, k_in)
        y = g if p_out is None else g @ p_out  # (*lead, t, k_out)
        spec = "nta,n...tb->n...ab" if vmapped else "ta,...tb->...ab"
        phi = jnp.einsum(spec, x, y, preferred_element_type=y.dtype)
        total = phi if total is None else total + phi
    flat = total.reshape(*total.shape[:-2], split.k_in * split.k_out)[..., : split.columns]
    flat = flat * jnp.asarray(split.scale, flat.dtype)
    if split.columns < dim:
        flat = jnp.pad(flat, [(0, 0)] * (flat.ndim - 1) + [(0, dim - split.columns)])
    return flat
