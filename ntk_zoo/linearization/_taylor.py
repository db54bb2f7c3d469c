"""``taylor_expand``: the Taylor series of a model in its parameters, by nested forward mode."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax

from ntk_zoo.core import PureFn, as_pure_fn
from ntk_zoo.linearization._linearize import displacement

PyTree = Any

__all__ = ["taylor_expand"]


def taylor_expand(
    f: Callable[..., PyTree] | PureFn, params: PyTree = None, degree: int = 1
) -> Callable[..., PyTree] | PureFn:
    """The Taylor polynomial of ``f`` in its params around ``params``, to ``degree``.

    ``f_taylor(p, x) = Σ_{k=0}^{degree} D^k f(params, x)[δ, …, δ] / k!`` with ``δ = p − params``:
    the ``k``-th directional derivative along ``δ``, computed by ``k`` nested ``jax.jvp``\\ s
    (forward mode; no Jacobian or Hessian is formed). All orders come out of one nested
    evaluation: each level's ``jvp`` returns the lower orders as its primal and the next order
    as its tangent. Exact for ``f`` polynomial in the params of degree ``≤ degree``; degree 1 is
    :func:`ntk_zoo.linearize`, degree 0 the constant ``f(params, x)``. Cost grows as ``2^degree``
    forward passes. Neural-tangents' ``taylor_expand`` gives the same series.

    Args:
      f: ``f(params, x, **kwargs)``, or a :class:`~ntk_zoo.PureFn`.
      params: the expansion point; defaults to the ``PureFn``'s params.
      degree: the degree of the polynomial, ``>= 0``.

    Returns:
      ``f_taylor(p, x, **kwargs)`` with ``f``'s output structure; for a ``PureFn``, a
      ``PureFn`` whose ``apply`` is ``f_taylor`` (same params, ``vmap_axes``, ``batch_coupled``).

    Example:
      >>> import jax.numpy as jnp
      >>> from ntk_zoo import taylor_expand
      >>> f = lambda p, x: p**3 * x
      >>> f2 = taylor_expand(f, jnp.array(1.0), degree=2)  # 1 + 3δ + 3δ²
      >>> float(f2(jnp.array(2.0), 1.0))
      7.0
      >>> float(taylor_expand(f, jnp.array(1.0), degree=3)(jnp.array(2.0), 1.0))  # = 2³
      8.0

    Reference: J. Lee et al., "Wide Neural Networks of Any Depth Evolve as Linear Models Under
    Gradient Descent", NeurIPS 2019 (the first-order case).
    """
    pure = as_pure_fn(f, params, caller="taylor_expand (the expansion point)")
    if isinstance(f, PureFn):
        return pure._replace(apply=taylor_expand(pure.apply, pure.params, degree))
    if not isinstance(degree, int) or isinstance(degree, bool) or degree < 0:
        raise ValueError(f"degree must be an integer >= 0, got {degree!r}.")
    f, params0 = pure.apply, pure.params

    def f_taylor(p: PyTree, x: PyTree, **kwargs: Any) -> PyTree:
        delta = displacement(p, params0, "f_taylor")

        def orders(level: int) -> Callable[[PyTree], tuple]:
            """``q ↦ (D⁰f(q), …, D^level f(q))`` along ``delta``."""
            if level == 0:
                return lambda q: (f(q, x, **kwargs),)
            lower = orders(level - 1)

            def g(q):
                primal, tangent = jax.jvp(lower, (q,), (delta,))
                return (*primal, tangent[-1])

            return g

        terms = orders(degree)(params0)
        scaled = [
            jax.tree.map(lambda t, k=k: t / math.factorial(k), term) for k, term in enumerate(terms)
        ]
        return jax.tree.map(lambda *ts: sum(ts[1:], ts[0]), *scaled)

    return f_taylor
