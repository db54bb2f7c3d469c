"""Examples in blocks: the rows of a dataset, padded to a fixed block size."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def pad_rows(tree: PyTree, start: int, stop: int, size: int) -> PyTree:
    """Rows ``start:stop`` (axis 0) of every leaf, padded to ``size`` rows by repeating the
    first of them.

    Every block of a blocked computation then has one shape (one compiled program); the padded
    rows are real examples, so they compute finite values, and the caller trims them.

    Args:
      tree: a pytree of arrays with the examples along axis 0.
      start: the first row.
      stop: one past the last row (``stop - start <= size``).
      size: the rows of the result.

    Returns:
      ``tree`` with every leaf of ``size`` rows.

    Example:
      >>> import jax.numpy as jnp
      >>> from ntk_zoo.core import pad_rows
      >>> pad_rows(jnp.arange(5), 3, 5, 4).tolist()
      [3, 4, 3, 3]
    """

    def take(a):
        block = a[start:stop]
        pad = size - block.shape[0]
        if pad:
            block = jnp.concatenate([block, jnp.repeat(block[:1], pad, axis=0)], axis=0)
        return block

    return jax.tree.map(take, tree)
