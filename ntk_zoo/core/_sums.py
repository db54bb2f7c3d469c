"""Sums of many kernel terms, shaped for XLA's compiler."""

from __future__ import annotations

from typing import Any

import jax
from jax import lax


def tree_sum(terms: list) -> Any:
    """``Σ terms``, added pairwise as a balanced tree rather than as a chain.

    The terms of a kernel (its param leaves' kernels, a leaf's uses' pairs, or its parts: one
    per layer of an unrolled ``scan``) are dots' results behind the same reshapes and
    transposes, which XLA's simplifier moves below one ``add`` of a chain per run of its
    fixed-point loop over the whole program: a chain of ``n`` terms ran it ``n + 1`` times, a
    tree runs it about ``log2 n`` times (Jacobian contraction on a 12-layer MLP, 25 leaves:
    25 runs as a chain).

    >>> import jax.numpy as jnp
    >>> float(tree_sum([jnp.ones(()) * i for i in range(5)]))
    10.0
    """
    if not terms:
        raise ValueError("tree_sum: no terms to add.")
    while len(terms) > 1:
        odd = terms[-1:] if len(terms) % 2 else []
        terms = [_add(a, b) for a, b in zip(terms[0::2], terms[1::2])] + odd
    return terms[0]


def _add(a: Any, b: Any) -> Any:
    """``a + b``; by ``lax.add`` where both are numeric arrays of one shape and dtype (under a
    trace, ``+`` costs 2-3x its Python work: dtype promotion and broadcasting checks)."""
    if (
        isinstance(a, jax.Array)
        and isinstance(b, jax.Array)
        and a.shape == b.shape
        and a.dtype == b.dtype
        and a.dtype != bool
    ):
        return lax.add(a, b)
    return a + b
