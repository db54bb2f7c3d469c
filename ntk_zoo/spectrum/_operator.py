"""The matrix-free kernel operator ``v -> Θ(X, X)·v`` over a dataset, block by block.

``Θ·v = J (Jᵀ v) = Σ_b J_b (Σ_b' J_b'ᵀ v_b')``: one pass of VJPs over the blocks of examples
accumulates the params-shaped ``u = Jᵀ v``, then one JVP per block gives that block's rows of
``J u``. Memory is one block's activations plus two copies of the params and the ``(n, o)``
vectors: never ``n × n``. The exact trace comes from per-example Jacobian norms, also by blocks.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ntk_zoo.core import PureFn, as_pure_fn, check_params, pad_rows

PyTree = Any


def _canonical_trace_axes(trace_axes: Any) -> bool:
    """``True`` for the logit-averaged kernel (``(-1,)``), ``False`` for ``()``."""
    axes = (trace_axes,) if isinstance(trace_axes, int) else tuple(trace_axes)
    if axes == ():
        return False
    if axes in ((-1,), (1,)):
        return True
    raise ValueError(
        f"trace_axes={trace_axes!r} is not supported by the matrix-free spectrum: use (-1,) for "
        "the kernel averaged over logits, an (n, n) matrix, or () for the full (n·o, n·o) one."
    )


def _unpack(f: Any, params: PyTree) -> tuple[Callable, PyTree, bool]:
    """``(apply, params, examples_independent)`` from a function or a :class:`PureFn`."""
    pure = as_pure_fn(f, params, caller="the matrix-free spectrum")
    if isinstance(f, PureFn):
        return pure.apply, pure.params, pure.vmap_axes is not None and not pure.batch_coupled
    return pure.apply, pure.params, True  # a plain f(params, x): examples are independent


def _n_examples(x: PyTree) -> int:
    leaves = jax.tree.leaves(x)
    if not leaves:
        raise ValueError("`x` has no array leaves: pass the dataset, examples along axis 0.")
    sizes = {np.shape(a)[0] if np.ndim(a) else None for a in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"Every leaf of `x` needs the examples along axis 0 with one common size; got leading "
            f"sizes {sorted(map(str, sizes))}."
        )
    n = sizes.pop()
    if n == 0:
        raise ValueError(
            "`x` holds no examples (axis 0 has size 0): the spectrum of an empty kernel is empty."
        )
    return n


class NtkOperator:
    """``Θ(X, X)`` as a linear map on NumPy vectors, built by :func:`ntk_operator`.

    ``op(v)`` takes ``v`` of shape ``(n,)`` (``trace_axes=(-1,)``) or ``(n, o)`` / ``(n·o,)``
    (``trace_axes=()``) and returns ``Θ·v`` in float64 with the same shape. ``op.size`` is the
    dimension ``n`` or ``n·o``. For inspection, ``op.apply_blocks(params, x_blocks, v_blocks)`` is
    the pure function each product runs (jitted), on ``op.x_blocks`` and ``op.to_blocks(v)``.
    """

    def __init__(
        self,
        f: Callable,
        params: PyTree,
        x: PyTree,
        block_size: int,
        averaged: bool,
        output_chunk: int | None,
        kwargs: dict,
    ):
        self.dtype = check_params(params)
        self.params = params
        self.n = _n_examples(x)
        self.averaged = averaged
        block_size = max(1, min(int(block_size), self.n))
        n_blocks = math.ceil(self.n / block_size)
        self.block_size = math.ceil(self.n / n_blocks)  # balanced: least padding
        self.n_blocks = n_blocks
        padded = pad_rows(jax.tree.map(jnp.asarray, x), 0, self.n, n_blocks * self.block_size)
        self.x_blocks = jax.tree.map(
            lambda a: a.reshape(n_blocks, self.block_size, *a.shape[1:]), padded
        )
        self.kwargs = kwargs

        def flat_f(p, xb):
            out = f(p, xb, **kwargs)
            if not hasattr(out, "shape"):
                raise TypeError(
                    "The matrix-free spectrum needs f to return one array with the examples on "
                    f"axis 0, got a {type(out).__name__}; select the logits in f."
                )
            return out.reshape(out.shape[0], -1)

        self._f = flat_f
        out = jax.eval_shape(flat_f, params, jax.tree.map(lambda a: a[0], self.x_blocks))
        if out.shape[0] != self.block_size:
            raise ValueError(
                f"f returned {out.shape[0]} rows for a block of {self.block_size} examples: the "
                "outputs need the examples on axis 0."
            )
        self.out_dtype = out.dtype
        self.n_outputs = out.shape[1]
        full = jax.eval_shape(lambda p: f(p, jax.tree.map(lambda a: a[:1], x), **kwargs), params)
        if averaged and full.ndim != 2:
            raise ValueError(
                f"trace_axes=(-1,) needs outputs of shape (n, o); f gives {tuple(full.shape)} per "
                "example batch. Reshape the outputs to (n, o) in f, or use trace_axes=()."
            )
        self.size = self.n if averaged else self.n * self.n_outputs
        chunk = self.n_outputs if output_chunk is None else max(1, int(output_chunk))
        self.output_chunk = min(chunk, self.n_outputs)
        self._mask = (np.arange(self.n_blocks * self.block_size) < self.n).reshape(
            self.n_blocks, self.block_size
        )
        self._jitted = jax.jit(self.apply_blocks)

    # -- the pure product --------------------------------------------------------------------
    def _full_product(self, params: PyTree, x_blocks: PyTree, v_blocks: jax.Array) -> jax.Array:
        """``J (Jᵀ v)`` with ``v_blocks`` of shape ``(n_blocks, block, o)``."""

        def pull(acc, inputs):
            xb, vb = inputs
            _, vjp = jax.vjp(lambda p: self._f(p, xb), params)
            (u,) = vjp(vb.astype(self.out_dtype))
            return jax.tree.map(jnp.add, acc, u), None

        u, _ = lax.scan(pull, jax.tree.map(jnp.zeros_like, params), (x_blocks, v_blocks))
        return lax.map(lambda xb: jax.jvp(lambda p: self._f(p, xb), (params,), (u,))[1], x_blocks)

    def apply_blocks(self, params: PyTree, x_blocks: PyTree, v_blocks: jax.Array) -> jax.Array:
        """``Θ·v`` on blocked arrays: ``v_blocks`` is ``(n_blocks, block)`` for the averaged
        kernel and ``(n_blocks, block, o)`` for the full one; padded rows of ``v`` must be 0."""
        if not self.averaged:
            return self._full_product(params, x_blocks, v_blocks)
        o = self.n_outputs

        def one_logit(a):
            basis = (jnp.arange(o) == a).astype(v_blocks.dtype).reshape((1,) * v_blocks.ndim + (o,))
            v = v_blocks[..., None] * basis
            return self._full_product(params, x_blocks, v)[..., a]

        per_logit = lax.map(one_logit, jnp.arange(o), batch_size=self.output_chunk)
        return per_logit.sum(0) / o  # ntk_fn's convention: a mean over the traced logits

    # -- NumPy interface ---------------------------------------------------------------------
    def to_blocks(self, v: Any) -> jax.Array:
        """``v`` (flat or ``(n, o)``) as the zero-padded blocked array ``apply_blocks`` takes."""
        v = np.asarray(v, np.float64)
        if v.size != self.size:
            raise ValueError(
                f"v has {v.size} entries; this operator acts on vectors of size {self.size} "
                f"({'n' if self.averaged else 'n·o'})."
            )
        rows = v.reshape(self.n, -1)
        padded = np.zeros((self.n_blocks * self.block_size, rows.shape[1]))
        padded[: self.n] = rows
        shape = (self.n_blocks, self.block_size) + (() if self.averaged else (rows.shape[1],))
        return jnp.asarray(padded.reshape(shape), self.dtype)

    def __call__(self, v: Any) -> np.ndarray:
        shape = np.shape(v)
        out = np.asarray(self._jitted(self.params, self.x_blocks, self.to_blocks(v)), np.float64)
        return out[self._mask].reshape(shape)

    def trace(self) -> float:
        """The exact trace, from per-example Jacobian squared norms (see :func:`trace`)."""
        return _trace(self)


@functools.partial(jax.jit, static_argnums=0)
def _block_sq_norms(op: NtkOperator, params: PyTree, xb: PyTree) -> jax.Array:
    """``Σ_a ‖∂f(x_i)_a/∂params‖²`` for each example ``i`` of one block."""
    f_example = lambda p, xi: op._f(p, jax.tree.map(lambda a: a[None], xi))[0]

    def one(xi):
        _, vjp = jax.vjp(lambda p: f_example(p, xi), params)
        basis = jnp.eye(op.n_outputs, dtype=op.out_dtype)
        grads = jax.vmap(lambda e: vjp(e)[0])(basis)
        return sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads))

    return lax.map(one, xb, batch_size=op.block_size)


def _trace(op: NtkOperator) -> float:
    total = 0.0
    for b in range(op.n_blocks):
        xb = jax.tree.map(lambda a, b=b: a[b], op.x_blocks)
        sq = np.asarray(_block_sq_norms(op, op.params, xb), np.float64)
        total += float(sq[op._mask[b]].sum())
    return total / op.n_outputs if op.averaged else total


def ntk_operator(
    f: Callable[..., jax.Array] | PureFn,
    params: PyTree = None,
    x: PyTree = None,
    *,
    block_size: int = 256,
    trace_axes: Any = (-1,),
    output_chunk: int | None = None,
    **kwargs: Any,
) -> NtkOperator:
    """The kernel ``Θ(x, x)`` of a whole dataset as a matrix-free operator.

    Each product ``Θ·v = Σ_b J_b (Σ_b' J_b'ᵀ v_b')`` makes one VJP pass and one JVP pass over
    the blocks of ``block_size`` examples: memory ``O(block)``, never ``O(n²)``. It matches
    :func:`ntk_zoo.ntk_fn` number for number: ``trace_axes=(-1,)`` is the ``(n, n)`` kernel
    averaged over the ``o`` logits (``Θ = (1/o) Σ_a J_a J_aᵀ``, ``o`` passes per product),
    ``trace_axes=()`` the ``(n·o, n·o)`` kernel, rows ordered as ``(example, logit)`` like
    :func:`flatten_kernel`.

    Blocks are exact only if examples do not interact (no BatchNorm on batch statistics); a
    :class:`~ntk_zoo.PureFn` whose examples interact needs ``block_size >= n``.

    Args:
      f: ``f(params, x, **kwargs)`` returning ``(n, o)`` outputs, or a :class:`~ntk_zoo.PureFn`.
      params: the parameters; defaults to the ``PureFn``'s.
      x: the dataset, examples along axis 0 (a pytree of arrays is allowed).
      block_size: examples per block.
      trace_axes: ``(-1,)`` or ``()``.
      output_chunk: with ``trace_axes=(-1,)``, how many logits are vmapped at once (default all);
        lower it to bound memory for many-logit models.
      **kwargs: passed to ``f`` unchanged for every block.

    Example:
      >>> import jax.numpy as jnp
      >>> from ntk_zoo.spectrum import ntk_operator
      >>> f = lambda p, x: jnp.tanh(x @ p)
      >>> x = jnp.arange(12.0).reshape(4, 3) / 12
      >>> op = ntk_operator(f, jnp.ones((3, 2)) / 3, x, block_size=3)  # blocks of 3 and 1
      >>> op.size, op(jnp.ones(4)).shape
      (4, (4,))
      >>> ntk_operator(f, jnp.ones((3, 2)) / 3, x, trace_axes=()).size  # n·o
      8
    """
    apply, params, independent = _unpack(f, params)
    if x is None:
        raise TypeError("`x` (the dataset, examples along axis 0) is required.")
    averaged = _canonical_trace_axes(trace_axes)
    if not isinstance(block_size, int | np.integer) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}.")
    n = _n_examples(x)
    if not independent and block_size < n:
        raise ValueError(
            f"This model's examples interact (BatchNorm on batch statistics, or vmap_axes=None), "
            f"so blocks of {block_size} would change the kernel: use block_size >= n = {n}."
        )
    return NtkOperator(apply, params, x, int(block_size), averaged, output_chunk, kwargs)


def trace(
    f: Callable[..., jax.Array] | PureFn | NtkOperator,
    params: PyTree = None,
    x: PyTree = None,
    *,
    block_size: int = 256,
    trace_axes: Any = (-1,),
    **kwargs: Any,
) -> float:
    """The exact trace of ``Θ(x, x)`` without the kernel: ``Σ_i ‖J(x_i)‖²`` (``/o`` averaged).

    Per-example Jacobians are formed one block at a time (memory ``block_size·o·p``); the
    ``n × n`` kernel never is. Same conventions as :func:`ntk_operator`; the result is
    ``numpy.trace`` of the flattened kernel from :func:`ntk_zoo.ntk_fn`.

    Example:
      >>> import jax.numpy as jnp
      >>> from ntk_zoo.spectrum import trace
      >>> f = lambda p, x: x @ p  # J(x_i) for logit a is x_i in that logit's column
      >>> trace(f, jnp.ones((3, 2)), jnp.ones((5, 3)), block_size=2)  # 5 examples · |x_i|² = 3
      15.0
    """
    if isinstance(f, NtkOperator):
        return f.trace()
    return ntk_operator(
        f, params, x, block_size=block_size, trace_axes=trace_axes, **kwargs
    ).trace()
