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


def as_pure_fn(
    f: Callable[..., Any] | PureFn,
    params: Any = None,
    vmap_axes: Any = None,
    *,
    require_params: bool = True,
    caller: str = "this function",
) -> PureFn:
    """``f`` and ``params`` (a :class:`PureFn`, or a plain ``f(params, x, **kwargs)`` with its
    ``params``) as one :class:`PureFn`: the single place where both call forms are unwrapped.

    For a ``PureFn``, ``params`` and ``vmap_axes`` given here override its own (``None`` keeps
    them); asking for ``vmap_axes`` on a model whose examples interact is an error. For a plain
    function, the result carries ``params`` and ``vmap_axes`` as given.

    Args:
      f: a :class:`PureFn`, or a callable ``f(params, x, **kwargs)``.
      params: the parameters, or ``None`` for the ``PureFn``'s own.
      vmap_axes: the batch axes requested by the caller, or ``None`` for the ``PureFn``'s own.
      require_params: raise when no params are known (a plain ``f`` without ``params``).
      caller: the name used in error messages.

    Returns:
      A :class:`PureFn`.

    Example:
      >>> import jax.numpy as jnp
      >>> from ntk_zoo.core import PureFn, as_pure_fn
      >>> apply = lambda p, x: x @ p
      >>> as_pure_fn(apply, jnp.ones(3)).vmap_axes is None
      True
      >>> as_pure_fn(PureFn(apply, jnp.ones(3)), vmap_axes=None).vmap_axes
      0
    """
    if isinstance(f, PureFn):
        if f.batch_coupled and vmap_axes is not None:
            raise ValueError(
                f"vmap_axes={vmap_axes!r} was requested, but this model's examples interact "
                "(BatchNorm with batch_norm='coupled' uses the statistics of the whole batch), "
                "so per-example Jacobians would be wrong. Leave vmap_axes=None, or build the "
                "model with batch_norm='running' or 'batch'."
            )
        return f._replace(
            params=f.params if params is None else params,
            vmap_axes=f.vmap_axes if vmap_axes is None else vmap_axes,
        )
    framework = _framework_of(f)
    if framework is not None:
        raise TypeError(
            f"`f` is a {framework} model ({type(f).__name__}), not a function f(params, x); "
            "wrap it first: ntk_zoo.from_linen(module, variables), ntk_zoo.from_nnx(model) or "
            "ntk_zoo.from_haiku(transformed, params, state)."
        )
    if not callable(f):
        raise TypeError(f"`f` must be callable as f(params, x, **kwargs), got {type(f).__name__}.")
    if params is None and require_params:
        raise TypeError(f"{caller} needs `params` when `f` is a plain function (not a PureFn).")
    return PureFn(f, params, vmap_axes)


def _framework_of(f: Any) -> str | None:
    """``"flax"`` or ``"haiku"`` when ``f`` is a model object of that framework (a linen or NNX
    module, a Haiku ``Transformed``), read from its class's modules without importing either."""
    for cls in type(f).__mro__:
        root = cls.__module__.split(".")[0]
        if root in ("flax", "haiku"):
            return root
    return None
