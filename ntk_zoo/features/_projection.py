"""Random projections generated block by block, never held whole.

``P`` has one block of rows per param leaf; a leaf's rows are cut into blocks of at most
``ROW_BLOCK`` rows and the ``dim`` columns into blocks of ``COLUMN_BLOCK`` columns. Block
``(r, c)`` of leaf ``l`` is drawn from ``fold_in(fold_in(fold_in(key, l), c), r)``, so ``P``
depends only on the key and the param layout (leaf order and sizes): the same key gives the
same features for an example in any batch, and the first ``k`` columns of ``P`` do not depend on
``dim`` beyond ``k``. Memory: one ``ROW_BLOCK × COLUMN_BLOCK`` block at a time (``lax.scan`` over
row blocks, ``lax.map`` over column blocks), whatever the number of params.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

ROW_BLOCK = 1 << 16
COLUMN_BLOCK = 256
PROJECTIONS = ("gaussian", "rademacher", "structured")


def check_projection(projection: str) -> None:
    if projection not in PROJECTIONS:
        raise ValueError(
            f"projection={projection!r}; choose one of {PROJECTIONS} (dense projections with "
            "unit-variance entries generated block by block, or Kronecker products per dense "
            "and convolution layer)."
        )


def _block(key: jax.Array, shape: tuple[int, int], projection: str, dtype) -> jax.Array:
    if projection == "gaussian":
        return jax.random.normal(key, shape, dtype)
    return jax.random.rademacher(key, shape, dtype)


def project_leaf(g: jax.Array, key: jax.Array, dim: int, projection: str = "gaussian") -> jax.Array:
    """``g @ P_l``: rows ``g`` of shape ``(m, s)`` (``s`` the leaf's size) times the leaf's
    ``(s, dim)`` block of ``P``, generated block by block from ``key`` (the leaf's key).

    Returns:
      An ``(m, dim)`` array (unscaled: ``P`` has unit-variance entries).
    """
    m, s = g.shape
    rows = min(s, ROW_BLOCK)
    n_rows = max(math.ceil(s / rows), 1)
    n_columns = math.ceil(dim / COLUMN_BLOCK)
    if n_rows * rows != s:
        g = jnp.pad(g, ((0, 0), (0, n_rows * rows - s)))
    g = g.reshape(m, n_rows, rows).transpose(1, 0, 2)  # (row blocks, m, rows)

    def column_block(c: jax.Array) -> jax.Array:
        kc = jax.random.fold_in(key, c)
        if n_rows == 1:
            return g[0] @ _block(
                jax.random.fold_in(kc, 0), (rows, COLUMN_BLOCK), projection, g.dtype
            )

        def step(acc, r_gr):
            r, gr = r_gr
            p = _block(jax.random.fold_in(kc, r), (rows, COLUMN_BLOCK), projection, g.dtype)
            return acc + gr @ p, None

        zero = jnp.zeros((m, COLUMN_BLOCK), g.dtype)
        return lax.scan(step, zero, (jnp.arange(n_rows), g))[0]

    out = lax.map(column_block, jnp.arange(n_columns))  # (column blocks, m, COLUMN_BLOCK)
    return out.transpose(1, 0, 2).reshape(m, n_columns * COLUMN_BLOCK)[:, :dim]


def leaf_key(key: jax.Array, index: int) -> jax.Array:
    """The key of param leaf ``index`` (in ``jax.tree.leaves`` order)."""
    return jax.random.fold_in(key, index)
