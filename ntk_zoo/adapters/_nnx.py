"""Flax NNX modules as ``PureFn``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from ntk_zoo._extras import require
from ntk_zoo.adapters import _common
from ntk_zoo.core import PureFn


def from_nnx(
    model: Any,
    *,
    wrt: Any = None,
    params_filter: str | Sequence[str] | Callable[[str, Any], bool] | None = None,
    batch_norm: str = "running",
    calibration: Any = None,
    dropout: jax.Array | None = None,
    output: Any = None,
    method: str | None = None,
    **call_kwargs: Any,
) -> PureFn:
    """A Flax NNX module as a :class:`~ntk_zoo.PureFn` (``nnx.split`` / ``nnx.merge``).

    The user's model is never modified: modes are set on a clone.

    Args:
      model: the ``nnx.Module``.
      wrt: an NNX filter of what to differentiate (default ``nnx.Param``; a variable type, a
        predicate ``(path, value) -> bool``, or any filter ``nnx.split`` takes).
      params_filter: further narrows ``wrt`` by path: a regex searched in the ``/``-joined path
        (``"kernel$"``: weights only), several regexes, or ``predicate(path, value)``.
      batch_norm: ``"running"``, ``"batch"`` (statistics of ``calibration``, frozen) or
        ``"coupled"`` (statistics of the batch given; examples interact).
      calibration: the batch for ``batch_norm="batch"``.
      dropout: ``None`` (dropout off) or a PRNG key: one fixed mask shared by x1 and x2.
      output: selects the logits from a tuple/dict output (an index, a key or a callable).
      method: name of the module method to call instead of ``__call__``.
      **call_kwargs: passed to every call.

    Example:
      >>> from flax import nnx
      >>> import jax.numpy as jnp, ntk_zoo
      >>> model = nnx.Linear(5, 3, rngs=nnx.Rngs(0))
      >>> pure = ntk_zoo.from_nnx(model)
      >>> ntk_zoo.ntk_fn(pure)(jnp.ones((4, 5))).shape
      (4, 4)
    """
    nnx = require("flax.nnx", "ntk_zoo.from_nnx")
    _common.check_policy(batch_norm, calibration)
    wrt = nnx.Param if wrt is None else wrt
    keep = _common.path_predicate(params_filter)
    by_path = lambda path, value: keep("/".join(map(str, path)), value)
    selected = nnx.All(wrt, by_path)

    def view(use_running_average: bool) -> Any:
        return nnx.view(
            nnx.clone(model),
            use_running_average=use_running_average,
            deterministic=dropout is None,
            raise_if_not_found=False,
        )

    module = view(batch_norm != "coupled")
    if batch_norm == "batch":
        trainer = view(False)
        graph, stats, rest = nnx.split(trainer, nnx.BatchStat, ...)

        def update(start):
            m = nnx.merge(graph, start, rest)
            (getattr(m, method) if method else m)(calibration, **call_kwargs)
            return nnx.state(m, nnx.BatchStat)

        frozen_stats = _common.batch_statistics_from_ema(update, stats)
        nnx.update(module, frozen_stats)

    graphdef, params, keys, rest = nnx.split(module, selected, nnx.RngKey, ...)
    _common.check_selected(len(jax.tree.leaves(params)), "the model's variables")
    if dropout is not None:
        key = (
            dropout
            if jnp.issubdtype(dropout.dtype, jax.dtypes.prng_key)
            else (jax.random.wrap_key_data(dropout))
        )
        keys = jax.tree.map(lambda _: key, keys)

    coupled = batch_norm == "coupled"

    def apply(params, x, **kwargs):
        # copy=True: fresh Variables at this trace level, so that layers which write state during
        # the call (BatchNorm in training mode, dropout's rng counter) may do so under jit/vmap.
        m = nnx.merge(graphdef, params, keys, rest, copy=True)
        out = (getattr(m, method) if method else m)(x, **call_kwargs, **kwargs)
        return _common.select_output(output, out)

    fn = apply if dropout is None else _common.per_example(apply)
    return PureFn(fn, params, None if coupled else 0, coupled)
