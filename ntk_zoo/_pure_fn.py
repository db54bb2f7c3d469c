"""``PureFn``: a model as a pure function and the parameters it is differentiated in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class PureFn(NamedTuple):
    """``apply(params, x, **kwargs)`` with the ``params`` to differentiate in.

    Everything not in ``params`` (BatchNorm statistics, frozen layers, rng state) is a constant
    inside ``apply``. ``vmap_axes`` is the batch axis along which examples are independent
    (``None`` when they interact, e.g. BatchNorm with statistics of the batch given); it is what
    :func:`ntk_zoo.ntk_fn` uses unless told otherwise. ``batch_coupled`` marks models whose
    examples interact, for which asking for ``vmap_axes`` is an error.

    Example:
      >>> import jax.numpy as jnp
      >>> import ntk_zoo
      >>> pure = ntk_zoo.PureFn(lambda p, x: x @ p["w"], {"w": jnp.ones((3, 2))})
      >>> ntk_zoo.ntk_fn(pure)(jnp.ones((4, 3))).shape
      (4, 4)
    """

    apply: Callable[..., Any]
    params: Any
    vmap_axes: Any = 0
    batch_coupled: bool = False
