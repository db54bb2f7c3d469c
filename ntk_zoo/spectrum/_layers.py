"""Per-layer view of the kernel: each module's share of ``tr Θ`` and of ``λ_max``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from ntk_zoo.spectrum._dense import flatten_kernel

PyTree = Any


def path_names(path: tuple) -> list[str]:
    """The key path of a pytree leaf as plain names, wrapper components dropped.

    Example:
      >>> import jax
      >>> tree = {"params": {"Dense_0": {"kernel": 1, "bias": 2}}}
      >>> [path_names(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
      [['Dense_0', 'bias'], ['Dense_0', 'kernel']]
    """
    names = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                names.append(str(getattr(k, attr)))
                break
        else:
            names.append(jax.tree_util.keystr((k,)).strip("[]'."))
    # No module information: linen's top-level collection, the ``value`` of NNX variables.
    if len(names) > 1 and names[0] == "params":
        names = names[1:]
    if len(names) > 1 and names[-1] == "value":
        names = names[:-1]
    return names


def group_name(path: tuple, group: int | Callable[[str], str] | None = None) -> str:
    """The group of a param leaf: its parent module by default (``Dense_0/kernel`` ->
    ``Dense_0``), the first ``group`` path components for an ``int``, or ``group(path)`` for a
    callable taking the ``/``-joined path.

    Public so that every per-layer report groups param leaves alike (as :func:`layer_shares`).

    Example:
      >>> from jax.tree_util import DictKey
      >>> from ntk_zoo.spectrum import group_name
      >>> path = (DictKey("params"), DictKey("block_1"), DictKey("Dense_0"), DictKey("kernel"))
      >>> group_name(path), group_name(path, 1), group_name(path, lambda p: p.split("/")[-1])
      ('block_1/Dense_0', 'block_1', 'kernel')
    """
    names = path_names(path)
    if callable(group):
        return str(group("/".join(names)))
    if group is None:
        return "/".join(names[:-1]) or names[-1]
    if not isinstance(group, int | np.integer) or group < 1:
        raise ValueError(
            f"group must be None, a positive int or a callable path -> name, got {group!r}."
        )
    return "/".join(names[: int(group)])


def trace_shares(
    per_leaf_traces: PyTree, *, group: int | Callable[[str], str] | None = None
) -> dict[str, float]:
    """Each module's share of ``tr Θ = Σ_l tr Θ_l``, from per-param-leaf traces.

    For kernels too large to form: the traces need only the per-example diagonal. A group
    ``G`` of leaves gets ``Σ_{l∈G} tr Θ_l / tr Θ``; the shares sum to 1 (all 0 when
    ``tr Θ = 0``). Leaves are grouped as :func:`layer_shares` groups them.

    Args:
      per_leaf_traces: a params-shaped tree whose leaf ``l`` sums to ``tr Θ_l``: a scalar, or
        the per-example diagonal ``Θ_l(x_i, x_i)`` of ``ntk_fn(f, diagonal_axes=(0,),
        sum_params=False)`` (summed here, in float64).
      group: as for :func:`layer_shares`.

    Returns:
      ``{group: trace share}``, groups sorted by name.

    Example:
      >>> import jax, jax.numpy as jnp, ntk_zoo
      >>> from ntk_zoo.spectrum import trace_shares
      >>> f = lambda p, x: jnp.tanh(x @ p["Dense_0"]["kernel"]) @ p["Dense_1"]["kernel"]
      >>> params = {"Dense_0": {"kernel": jnp.ones((3, 4))},
      ...           "Dense_1": {"kernel": jnp.ones((4, 2))}}
      >>> diag_fn = ntk_zoo.ntk_fn(f, diagonal_axes=(0,), sum_params=False)
      >>> diag = diag_fn(jnp.ones((5, 3)), None, params)
      >>> shares = trace_shares(diag)
      >>> sorted(shares), round(sum(shares.values()), 6)
      (['Dense_0', 'Dense_1'], 1.0)
    """
    leaves = jax.tree_util.tree_flatten_with_path(per_leaf_traces)[0]
    if not leaves:
        raise ValueError("per_leaf_traces has no leaves: pass a params-shaped tree of traces.")
    totals: dict[str, float] = {}
    for path, leaf in leaves:
        name = group_name(path, group)
        totals[name] = totals.get(name, 0.0) + float(np.sum(np.asarray(leaf, np.float64)))
    whole = sum(totals.values())
    return {k: (v / whole if whole else 0.0) for k, v in sorted(totals.items())}


def layer_shares(
    per_leaf_kernels: PyTree, *, group: int | Callable[[str], str] | None = None
) -> dict[str, dict[str, float]]:
    """Each module's share of ``tr Θ`` and of ``λ_max``, from per-param-leaf kernels.

    ``Θ = Σ_l Θ_l`` over param leaves ``l``. A group ``G`` of leaves gets the trace share
    ``Σ_{l∈G} tr Θ_l / tr Θ`` and the ``λ_max`` share ``Σ_{l∈G} v_maxᵀ Θ_l v_max / λ_max``, with
    ``v_max`` the top eigenvector of ``Θ`` (float64): how much of the stiffest direction each
    module makes. Both sum to 1 over the groups. The ``λ_max`` share does not depend on the sign
    of ``v_max`` (it enters twice) but is ill defined when ``λ_max`` is repeated.

    Args:
      per_leaf_kernels: what ``ntk_fn(f, trace_axes=(-1,) or (), sum_params=False)(x, None,
        params)`` returns: a params-shaped tree of ``(n, n)`` or ``(n, n, o, o)`` kernels.
      group: ``None`` groups leaves by their parent path (``Dense_0/kernel`` and
        ``Dense_0/bias`` -> ``Dense_0``; a top-level ``params`` of linen trees is skipped), an
        ``int`` keeps that many leading path components, a callable maps the ``/``-joined leaf
        path to a group name.

    Returns:
      ``{group: {"trace": share, "lambda_max": share}}``, groups sorted by name.

    Example:
      >>> import jax, jax.numpy as jnp, ntk_zoo
      >>> from ntk_zoo.spectrum import layer_shares
      >>> def f(p, x):
      ...     h = jnp.tanh(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"][None])
      ...     return h @ p["Dense_1"]["kernel"]
      >>> k1, k2 = jax.random.split(jax.random.key(0))
      >>> params = {"Dense_0": {"kernel": jax.random.normal(k1, (3, 8)), "bias": jnp.zeros(8)},
      ...           "Dense_1": {"kernel": jax.random.normal(k2, (8, 2))}}
      >>> per_leaf = ntk_zoo.ntk_fn(f, sum_params=False)(jnp.ones((4, 3)), None, params)
      >>> shares = layer_shares(per_leaf)
      >>> sorted(shares), round(sum(s["trace"] for s in shares.values()), 6)
      (['Dense_0', 'Dense_1'], 1.0)
    """
    leaves = jax.tree_util.tree_flatten_with_path(per_leaf_kernels)[0]
    if not leaves:
        raise ValueError("per_leaf_kernels has no leaves: pass ntk_fn(..., sum_params=False)'s.")
    flat = []
    for path, k in leaves:
        k = flatten_kernel(np.asarray(k, np.float64))
        if k.shape[0] != k.shape[1]:
            raise ValueError(
                f"The kernel of {'/'.join(path_names(path))} has shape {k.shape}; shares need "
                "the square Θ(x, x) (call the kernel function with x2=None)."
            )
        if flat and k.shape != flat[0][1].shape:
            raise ValueError(
                f"Per-leaf kernels differ in shape: {k.shape} vs {flat[0][1].shape}; pass the "
                "output of one ntk_fn(..., sum_params=False) call."
            )
        flat.append((group_name(path, group), k))
    total = sum(k for _, k in flat)
    total = (total + total.T) / 2
    eigenvalues, vectors = np.linalg.eigh(total)
    lambda_max, v = float(eigenvalues[-1]), vectors[:, -1]
    whole_trace = float(np.trace(total))
    shares: dict[str, dict[str, float]] = {}
    for name, k in flat:
        entry = shares.setdefault(name, {"trace": 0.0, "lambda_max": 0.0})
        entry["trace"] += float(np.trace(k)) / whole_trace if whole_trace else 0.0
        entry["lambda_max"] += float(v @ k @ v) / lambda_max if lambda_max else 0.0
    return dict(sorted(shares.items()))
