"""Input validation with messages that name the offending argument and the fix."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ntk_zoo._compat import is_tracer
from ntk_zoo.core._axes import LeafAxes

PyTree = Any


def _is_array(x: Any) -> bool:
    return isinstance(x, jax.Array | np.ndarray | np.generic) or (
        hasattr(x, "shape") and hasattr(x, "dtype")  # ShapeDtypeStruct, tracers
    )


def check_params(params: PyTree) -> jnp.dtype:
    """Checks every param leaf is a floating array; returns their promoted dtype."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    if not leaves:
        raise ValueError(
            "`params` has no array leaves: there is nothing to differentiate. Pass the model's "
            "parameters (e.g. variables['params'] for Flax linen)."
        )
    dtypes = []
    for path, leaf in leaves:
        where = f"params{jax.tree_util.keystr(path)}"
        if not _is_array(leaf):
            raise TypeError(
                f"{where} is a {type(leaf).__name__}, not an array. Every param leaf must be an "
                "array: wrap it with jnp.asarray(...), or close over it in `f` if it is not a "
                "parameter."
            )
        dtype = jnp.dtype(leaf.dtype)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{where} has dtype {dtype}: the NTK is undefined for non-floating parameters "
                "(no derivative exists). Move it out of `params` (close over it in `f`), or cast "
                "it to a float dtype."
            )
        dtypes.append(dtype)
    return jnp.result_type(*dtypes)


@jax.jit
def _finite_leaves(leaves: list) -> jax.Array:
    return jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves])


def check_params_finite(params: PyTree) -> None:
    """Raises on NaN/inf in concrete params (skipped under tracing); one device round trip."""
    paths, leaves = zip(*jax.tree_util.tree_flatten_with_path(params)[0], strict=True)
    if any(is_tracer(leaf) for leaf in leaves):
        return
    flags = _finite_leaves(list(leaves))
    if is_tracer(flags):  # concrete params inside someone else's jit: checked when it runs
        return
    for path, finite in zip(paths, np.asarray(flags)):
        if not finite:
            raise ValueError(
                f"params{jax.tree_util.keystr(path)} contains NaN or inf values; the kernel would "
                "be NaN. Check the initialisation or the checkpoint it was loaded from."
            )


def check_outputs(fx: PyTree) -> None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(fx)[0]:
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise TypeError(
                f"`f` returned output{jax.tree_util.keystr(path)} of dtype {leaf.dtype}; the NTK "
                "needs floating outputs. Return logits (before argmax/rounding) or cast to float."
            )
    if not jax.tree.leaves(fx):
        raise ValueError("`f` returned no array outputs, so there is no kernel to compute.")


def check_input_pair(x1: PyTree, x2: PyTree, x_axes: list[int | None] | None) -> None:
    """x1 and x2 must agree in structure and in per-example shape."""
    s1, s2 = jax.tree.structure(x1), jax.tree.structure(x2)
    if s1 != s2:
        raise ValueError(f"`x1` and `x2` have different structures: {s1} vs {s2}.")
    for i, (a, b) in enumerate(zip(jax.tree.leaves(x1), jax.tree.leaves(x2))):
        sa, sb = tuple(jnp.shape(a)), tuple(jnp.shape(b))
        if len(sa) != len(sb):
            raise ValueError(
                f"`x1` and `x2` leaf {i} have different ranks: shapes {sa} and {sb}. Both must be "
                "batches of examples of the same shape."
            )
        if x_axes is not None:
            ax = x_axes[i]
            keep = [d for d in range(len(sa)) if ax is None or d != ax % len(sa)]
            if [sa[d] for d in keep] != [sb[d] for d in keep]:
                raise ValueError(
                    f"`x1` and `x2` leaf {i} have different per-example shapes: {sa} and {sb} "
                    f"(batch axis {ax}). Both must hold examples of the same shape."
                )
        elif sum(u != v for u, v in zip(sa, sb)) > 1:
            raise ValueError(
                f"`x1` and `x2` leaf {i} differ in more than one axis: shapes {sa} and {sb}. Both "
                "must hold examples of the same shape (only the batch axis may differ)."
            )


def check_output_pair(fx1: PyTree, fx2: PyTree, axes: list[LeafAxes]) -> None:
    s1, s2 = jax.tree.structure(fx1), jax.tree.structure(fx2)
    if s1 != s2:
        raise ValueError(f"`f(x1)` and `f(x2)` have different structures: {s1} vs {s2}.")
    for i, (a, b, ax) in enumerate(zip(jax.tree.leaves(fx1), jax.tree.leaves(fx2), axes)):
        if a.ndim != b.ndim:
            raise ValueError(
                f"Output leaf {i} has shape {a.shape} for x1 but {b.shape} for x2 (ranks differ)."
            )
        for d in ax.trace + ax.diagonal:
            if a.shape[d] != b.shape[d]:
                kind = "traced" if d in ax.trace else "diagonal"
                raise ValueError(
                    f"Output leaf {i} axis {d} is {kind} but has size {a.shape[d]} for x1 and "
                    f"{b.shape[d]} for x2 (shapes {a.shape} and {b.shape}); traced and diagonal "
                    "axes need equal sizes on both sides."
                )
