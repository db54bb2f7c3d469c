"""Haiku transforms as ``PureFn``."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import jax

from ntk_zoo._extras import require
from ntk_zoo.adapters import _common
from ntk_zoo.core import PureFn


def _predicate(params_filter: Any) -> Callable[[str, str, Any], bool]:
    """Haiku's ``(module_name, name, value)`` predicates, or our path filters."""
    if callable(params_filter) and len(inspect.signature(params_filter).parameters) == 3:
        return params_filter
    keep = _common.path_predicate(params_filter)
    return lambda module_name, name, value: keep(f"{module_name}/{name}", value)


def from_haiku(
    transformed: Any,
    params: Any,
    state: Any = None,
    *,
    params_filter: str | Sequence[str] | Callable[..., bool] | None = None,
    batch_norm: str = "running",
    calibration: Any = None,
    train_kwargs: dict[str, Any] | None = None,
    dropout: jax.Array | None = None,
    output: Any = None,
    **apply_kwargs: Any,
) -> PureFn:
    """A Haiku ``hk.transform`` / ``hk.transform_with_state`` as a :class:`~ntk_zoo.PureFn`.

    Args:
      transformed: the transformed function (with or without an apply rng).
      params: its parameters, ``{module_name: {name: array}}``.
      state: its state (``transform_with_state``), e.g. BatchNorm statistics; never
        differentiated.
      params_filter: Haiku's ``predicate(module_name, name, value)``, a regex searched in
        ``"module_name/name"``, several regexes, or ``predicate(path, value)``.
      batch_norm: ``"running"`` (pass ``is_training=False``), ``"batch"`` (statistics of
        ``calibration``, frozen) or ``"coupled"`` (statistics of the batch given).
      calibration: the batch for ``batch_norm="batch"``.
      train_kwargs: extra arguments for training mode (e.g. ``{"is_training": True}``), used by
        ``"batch"`` and ``"coupled"``.
      dropout: ``None`` (no apply rng) or a PRNG key: one fixed mask shared by x1 and x2.
      output: selects the logits from a tuple/dict output (an index, a key or a callable).
      **apply_kwargs: passed to every ``apply`` call (e.g. ``is_training=False``).

    Example:
      >>> import haiku as hk, jax, jax.numpy as jnp, ntk_zoo
      >>> net = hk.without_apply_rng(hk.transform(lambda x: hk.nets.MLP([16, 3])(x)))
      >>> x = jnp.ones((4, 5))
      >>> pure = ntk_zoo.from_haiku(net, net.init(jax.random.key(0), x))
      >>> ntk_zoo.ntk_fn(pure)(x).shape
      (4, 4)
    """
    hk = require("haiku", "ntk_zoo.from_haiku")
    _common.check_policy(batch_norm, calibration)
    with_state = isinstance(transformed, hk.TransformedWithState)
    if with_state and state is None:
        raise ValueError("This transform_with_state needs its `state` (from init).")
    takes_rng = "rng" in inspect.signature(transformed.apply).parameters
    selected, frozen = hk.data_structures.partition(_predicate(params_filter), params)
    _common.check_selected(len(jax.tree.leaves(selected)), "the Haiku params")
    train_kwargs = dict(train_kwargs or {})

    def run(params, state, x, extra, kwargs):
        args = (hk.data_structures.merge(frozen, params),)
        args += (state,) if with_state else ()
        args += (dropout,) if takes_rng else ()
        try:
            out = transformed.apply(*args, x, **{**apply_kwargs, **extra, **kwargs})
        except ValueError as e:
            if "PRNGKey" not in str(e):
                raise
            raise ValueError(
                "The model needs an rng (dropout is active) but no dropout policy was given. "
                "Pass its eval-mode argument (e.g. is_training=False) to turn dropout off, or "
                "dropout=jax.random.key(0) for one fixed mask shared by x1 and x2."
            ) from e
        return out if with_state else (out, state)

    if batch_norm == "batch" and with_state:
        # From an all-zero state, one update of Haiku's zero-debiased moving averages equals the
        # statistics of the calibration batch exactly.
        zeros = jax.tree.map(lambda a: a * 0, state)
        _, state = run(selected, zeros, calibration, train_kwargs, {})
    coupled = batch_norm == "coupled"

    def apply(params, x, **kwargs):
        out, _ = run(params, state, x, train_kwargs if coupled else {}, kwargs)
        return _common.select_output(output, out)

    fn = apply if dropout is None else _common.per_example(apply)
    return PureFn(fn, selected, None if coupled else 0, coupled)
