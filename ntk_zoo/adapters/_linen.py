"""Flax linen modules as ``PureFn``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax

from ntk_zoo._extras import require
from ntk_zoo.adapters import _common
from ntk_zoo.core import PureFn


def _flat(variables: Any) -> dict[tuple[str, ...], Any]:
    traverse_util = require("flax.traverse_util", "ntk_zoo.from_linen")
    return traverse_util.flatten_dict(dict(variables))


def _nest(flat: dict[tuple[str, ...], Any]) -> dict:
    traverse_util = require("flax.traverse_util", "ntk_zoo.from_linen")
    return traverse_util.unflatten_dict(flat)


def from_linen(
    module: Any,
    variables: Any,
    *,
    collections: Sequence[str] = ("params",),
    params_filter: str | Sequence[str] | Callable[[str, Any], bool] | None = None,
    batch_norm: str = "running",
    calibration: Any = None,
    train_kwargs: dict[str, Any] | None = None,
    dropout: jax.Array | None = None,
    output: Any = None,
    method: Any = None,
    **apply_kwargs: Any,
) -> PureFn:
    """A Flax linen module and its variables as a :class:`~ntk_zoo.PureFn`.

    Args:
      module: the ``flax.linen.Module``.
      variables: what ``module.init`` returned (``{"params": ..., "batch_stats": ...}``).
      collections: the variable collections to differentiate; ``batch_stats`` never is.
      params_filter: narrows the differentiated leaves: a regex searched in the path inside its
        collection (``"kernel$"``: weights only; ``"Dense_2/"``: one layer), several regexes, or
        ``predicate(path, value)``. Everything else is frozen as a constant.
      batch_norm: ``"running"`` uses the running statistics (examples independent);
        ``"batch"`` computes the statistics of ``calibration`` once and freezes them (examples
        independent); ``"coupled"`` uses the statistics of the batch given (examples interact,
        so the kernel is computed on whole batches).
      calibration: the batch for ``batch_norm="batch"``.
      train_kwargs: extra ``apply`` arguments that put BatchNorm in training mode (e.g.
        ``{"train": True}``), used by ``"batch"`` and ``"coupled"``.
      dropout: ``None`` (dropout off: pass your module's eval-mode argument) or a PRNG key, one
        fixed mask shared by all examples of x1 and x2.
      output: selects the logits from a tuple/dict output (an index, a key or a callable).
      method: the module method to apply, as in ``module.apply(..., method=...)``.
      **apply_kwargs: passed to every ``module.apply`` call (e.g. ``train=False``).

    Returns:
      A ``PureFn`` whose ``params`` is the nested dict of differentiated leaves only.

    Example:
      >>> import flax.linen as nn, jax, jax.numpy as jnp
      >>> import ntk_zoo
      >>> model = nn.Sequential([nn.Dense(16), nn.relu, nn.Dense(3)])
      >>> x = jnp.ones((4, 5))
      >>> variables = model.init(jax.random.key(0), x)
      >>> pure = ntk_zoo.from_linen(model, variables)
      >>> ntk_zoo.ntk_fn(pure)(x).shape
      (4, 4)
    """
    linen_errors = require("flax.errors", "ntk_zoo.from_linen")
    _common.check_policy(batch_norm, calibration)
    if "batch_stats" in collections:
        raise ValueError(
            "collections includes 'batch_stats': BatchNorm statistics are never differentiated. "
            "Choose how they are used with batch_norm='running' | 'batch' | 'coupled'."
        )
    flat = _flat(variables)
    keep = _common.path_predicate(params_filter)
    selected = {
        path: value
        for path, value in flat.items()
        if path[0] in collections and keep("/".join(map(str, path[1:])), value)
    }
    _common.check_selected(len(selected), f"collections {tuple(collections)}")
    frozen = {path: value for path, value in flat.items() if path not in selected}
    train_kwargs = dict(train_kwargs or {})
    rngs = None if dropout is None else {"dropout": dropout}
    # One differentiated collection: params look like variables["params"] (filtered).
    single = len(collections) == 1

    def to_user(tree: dict) -> dict:
        return _nest({(p[1:] if single else p): v for p, v in tree.items()})

    def from_user(params: Any) -> dict:
        return {((collections[0], *p) if single else p): v for p, v in _flat(params).items()}

    def run(constants, params, x, mutable, extra, kwargs):
        merged = _nest({**constants, **from_user(params)})
        try:
            out = module.apply(
                merged,
                x,
                rngs=rngs,
                mutable=mutable,
                method=method,
                **{**apply_kwargs, **extra, **kwargs},
            )
        except linen_errors.ModifyScopeVariableError as e:
            raise ValueError(
                "The module updates its batch_stats, i.e. BatchNorm runs in training mode, but "
                f"batch_norm={batch_norm!r} freezes them. Pass the module's eval-mode argument "
                "(e.g. from_linen(..., train=False)), or batch_norm='coupled'."
            ) from e
        except linen_errors.InvalidRngError as e:
            raise ValueError(
                "The module needs an rng (dropout is active) but no dropout policy was given. "
                "Pass its eval-mode argument (e.g. train=False) to turn dropout off, or "
                "dropout=jax.random.key(0) for one fixed mask shared by x1 and x2."
            ) from e
        return out

    if batch_norm == "batch":
        stats = {p: v for p, v in frozen.items() if p[0] == "batch_stats"}

        def update(start):
            constants = {**frozen, **start}
            _, new = run(
                constants, to_user(selected), calibration, ["batch_stats"], train_kwargs, {}
            )
            return _flat(new)

        frozen = {**frozen, **_common.batch_statistics_from_ema(update, stats)}

    coupled = batch_norm == "coupled"

    def apply(params, x, **kwargs):
        if coupled:  # train-mode statistics of this batch; the updates are discarded
            out, _ = run(frozen, params, x, ["batch_stats"], train_kwargs, kwargs)
        else:
            out = run(frozen, params, x, False, {}, kwargs)
        return _common.select_output(output, out)

    fn = apply if dropout is None else _common.per_example(apply)
    return PureFn(fn, to_user(selected), None if coupled else 0, coupled)
