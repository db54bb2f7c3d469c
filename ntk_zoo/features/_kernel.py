"""Kernels from features, and how far they are from the exact kernel."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any


def _one(phi1: Any, phi2: Any) -> jax.Array:
    phi1, phi2 = jnp.asarray(phi1), jnp.asarray(phi2)
    if phi1.shape[1:] != phi2.shape[1:]:
        raise ValueError(
            f"features of shapes {phi1.shape} and {phi2.shape}: both need the same "
            "(..., dim) after the example axis (features of one model, one key)."
        )
    k = phi1.ndim - 2  # output axes between the example axis and dim
    a, b = "abcdefgh"[:k], "ABCDEFGH"[:k]
    inter = "".join(u + v for u, v in zip(a, b))
    return jnp.einsum(f"i{a}z,j{b}z->ij{inter}", phi1, phi2)


def kernel_from_features(phi1: PyTree, phi2: PyTree | None = None) -> PyTree:
    """``Φ1 Φ2ᵀ``: the kernel the features estimate, in :func:`ntk_zoo.ntk_fn`'s layout.

    Features ``(n, dim)`` (from ``cotangents``) give ``(n1, n2)``; features ``(n, o, dim)``
    give the full kernel ``(n1, n2, o, o)`` (``trace_axes=()``; average its diagonal output
    pair for the default ``trace_axes=(-1,)``); pytrees of features give one kernel per leaf.

    Args:
      phi1: features of ``x1`` from :func:`ntk_zoo.gradient_features`.
      phi2: features of ``x2`` (same key and model), or ``None`` for ``phi1``.

    Returns:
      The estimated kernel (a pytree like the features).

    Example:
      >>> import jax.numpy as jnp
      >>> import ntk_zoo
      >>> ntk_zoo.kernel_from_features(jnp.array([[1.0, 2.0], [0.0, 1.0]])).tolist()
      [[5.0, 2.0], [2.0, 1.0]]
    """
    phi2 = phi1 if phi2 is None else phi2
    return jax.tree.map(_one, phi1, phi2)


class FeatureError(NamedTuple):
    """How far ``Φ Φᵀ`` is from the exact kernel on a subset.

    ``relative_frobenius``: ``‖K̂ - K‖_F / ‖K‖_F``; ``max_relative``: ``max |K̂ - K| / max |K|``;
    ``expected``: the Gaussian-projection prediction of the relative Frobenius error,
    ``√(Σ (K_ii K_jj + K_ij²)) / (‖K‖_F √dim)``.
    """

    relative_frobenius: float
    max_relative: float
    expected: float


def feature_error(phi: Any, exact: Any) -> FeatureError:
    """Compares features of a subset with its exact kernel.

    Args:
      phi: ``(n, dim)`` features (with ``cotangents``) of a few examples.
      exact: their exact ``(n, n)`` kernel, e.g. ``ntk_fn(f, cotangents=..., vmap_axes=0)(x)``.

    Returns:
      A :class:`FeatureError`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import ntk_zoo
      >>> f = lambda p, x: jnp.tanh(x @ p)
      >>> p, x = jnp.ones((3, 4)) / 3, jnp.arange(15.0).reshape(5, 3) / 15
      >>> exact = ntk_zoo.ntk_fn(f, vmap_axes=0, cotangents="pntk")(x, None, p)
      >>> phi = ntk_zoo.gradient_features(
      ...     f, p, x, dim=4096, key=jax.random.key(0), cotangents="pntk", vmap_axes=0)
      >>> err = ntk_zoo.feature_error(phi, exact)
      >>> bool(err.relative_frobenius < 4 * err.expected)
      True
    """
    phi, exact = np.asarray(phi, np.float64), np.asarray(exact, np.float64)
    if phi.ndim != 2 or exact.shape != (phi.shape[0],) * 2:
        raise ValueError(
            f"feature_error takes (n, dim) features and their (n, n) exact kernel; got shapes "
            f"{phi.shape} and {exact.shape}."
        )
    est = phi @ phi.T
    norm = np.linalg.norm(exact)
    d = np.diag(exact)
    var = (np.outer(d, d) + exact**2).sum() / phi.shape[1]
    return FeatureError(
        float(np.linalg.norm(est - exact) / norm),
        float(np.abs(est - exact).max() / np.abs(exact).max()),
        float(np.sqrt(var) / norm),
    )
