"""``linearize``: the first-order Taylor expansion of a model in its parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from ntk_zoo.core import PureFn, as_pure_fn

PyTree = Any


def linearize(
    f: Callable[..., PyTree] | PureFn, params: PyTree = None
) -> Callable[..., PyTree] | PureFn:
    """The model linearised around ``params``: ``f_lin(p, x) = f(params, x) + J(x)(p − params)``.

    ``J(x) = ∂f(params, x)/∂params`` is applied by one ``jax.jvp`` per call, so no Jacobian is
    formed. The NTK of ``f_lin`` at any ``p`` is that of ``f`` at ``params``, and gradient descent
    on ``f_lin`` with the MSE loss is what :func:`ntk_zoo.predict.gradient_descent_mse` solves in
    closed form.

    Args:
      f: ``f(params, x, **kwargs)``, or a :class:`~ntk_zoo.PureFn`.
      params: the expansion point; defaults to the ``PureFn``'s params.

    Returns:
      ``f_lin(p, x, **kwargs)`` with ``f``'s output structure; for a ``PureFn``, a ``PureFn``
      whose ``apply`` is ``f_lin`` (same params, ``vmap_axes`` and ``batch_coupled``).

    Example:
      >>> import jax.numpy as jnp
      >>> from ntk_zoo import linearize
      >>> f = lambda p, x: jnp.sin(p * x)
      >>> f_lin = linearize(f, jnp.array(0.0))
      >>> float(f_lin(jnp.array(0.5), 2.0))  # sin(0) + cos(0)·2·0.5
      1.0

    Reference: J. Lee et al., "Wide Neural Networks of Any Depth Evolve as Linear Models Under
    Gradient Descent", NeurIPS 2019.
    """
    pure = as_pure_fn(f, params, caller="linearize (the expansion point)")
    if isinstance(f, PureFn):
        return pure._replace(apply=linearize(pure.apply, pure.params))
    f, params0 = pure.apply, pure.params

    def f_lin(p: PyTree, x: PyTree, **kwargs: Any) -> PyTree:
        delta = displacement(p, params0, "f_lin")
        out, tangent = jax.jvp(lambda q: f(q, x, **kwargs), (params0,), (delta,))
        return jax.tree.map(lambda a, b: a + b, out, tangent)

    return f_lin


def displacement(p: PyTree, params0: PyTree, name: str) -> PyTree:
    """``p − params0`` leaf by leaf, in the expansion point's dtypes; ``p`` must have the
    expansion point's structure (``name``: the expanded function, for the error)."""
    if jax.tree.structure(p) != jax.tree.structure(params0):
        raise ValueError(
            f"{name} got params of another structure than the expansion point: "
            f"{jax.tree.structure(p)} vs {jax.tree.structure(params0)}."
        )
    return jax.tree.map(lambda a, b: (a - b).astype(jax.numpy.result_type(b)), p, params0)
