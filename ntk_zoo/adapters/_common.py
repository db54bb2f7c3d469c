"""What the three framework adapters share: filters, output selectors, policies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ntk_zoo.core import path_predicate as path_predicate  # shared with ntk_fn's preconditioner

BATCH_NORM_POLICIES = ("running", "batch", "coupled")


def check_policy(batch_norm: str, calibration: Any) -> None:
    if batch_norm not in BATCH_NORM_POLICIES:
        raise ValueError(
            f"batch_norm={batch_norm!r} is not a policy; choose one of {BATCH_NORM_POLICIES}: "
            "'running' (running statistics), 'batch' (statistics of a calibration batch, "
            "frozen), 'coupled' (statistics of the batch given; examples interact)."
        )
    if batch_norm == "batch" and calibration is None:
        raise ValueError(
            "batch_norm='batch' needs `calibration`, the batch whose statistics are frozen."
        )


def check_selected(n_selected: int, what: str) -> None:
    if n_selected == 0:
        raise ValueError(
            f"The parameter filter selects nothing among the {what}: there would be nothing to "
            "differentiate. Check the filter against the parameter paths."
        )


def select_output(output: Any, out: Any) -> Any:
    """Applies an output selector: a dict key, a tuple index, or a callable."""
    if output is None:
        return out
    if callable(output):
        return output(out)
    try:
        return out[output]
    except (KeyError, IndexError, TypeError) as e:
        shape = (
            f"a dict with keys {sorted(out)}"
            if isinstance(out, dict)
            else f"a {type(out).__name__} of length {len(out)}"
            if isinstance(out, tuple | list)
            else f"an array of shape {getattr(out, 'shape', '?')}"
        )
        raise ValueError(
            f"output={output!r} does not match the model's output, which is {shape}. Pass the "
            "key or index of the logits (e.g. output=0 for (logits, features))."
        ) from e


def batch_statistics_from_ema(run: Callable[[Any], Any], stats: Any) -> Any:
    """Exact batch statistics from a layer that updates ``new = m·old + (1 - m)·batch``.

    ``run(stats)`` applies one training-mode update from ``stats``. Two runs, from zeros and from
    ones, give ``m = new_ones - new_zeros`` and ``batch = new_zeros / (1 - m)`` for any momentum.
    """
    from_zeros = run(jax.tree.map(jnp.zeros_like, stats))
    from_ones = run(jax.tree.map(jnp.ones_like, stats))
    return jax.tree.map(lambda z, o: z / (1 - (o - z)), from_zeros, from_ones)


def per_example(apply: Callable[..., Any]) -> Callable[..., Any]:
    """``apply`` run on each example (leading axis) alone, under ``vmap``.

    With a fixed dropout key, this makes every example, of x1 and of x2 alike, see the same
    mask, whether or not the kernel itself is computed per example.
    """

    def run(params, x, **kwargs):
        def one(xi):
            out = apply(params, jax.tree.map(lambda a: a[None], xi), **kwargs)
            return jax.tree.map(lambda o: o[0], out)

        return jax.vmap(one)(x)

    return run
