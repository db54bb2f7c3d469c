"""``gradient_features``: per-example gradients projected to ``dim`` random directions."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ntk_zoo.core import (
    PureFn,
    as_pure_fn,
    canonicalize_vmap_axes,
    precondition,
    transformed_problem,
)
from ntk_zoo.features._projection import check_projection, leaf_key, project_leaf
from ntk_zoo.features._stream import stream
from ntk_zoo.structured import kronecker_features, warn_once

PyTree = Any


def check_key(key: Any) -> jax.Array:
    """A typed PRNG key (``jax.random.key``) or a raw ``uint32[2]`` one; anything else raises."""
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape:
            raise ValueError(f"`key` must be one key, got a batch of shape {key.shape}.")
        return key
    if isinstance(key, jax.Array | np.ndarray) and key.dtype == np.uint32 and key.shape == (2,):
        return jax.random.wrap_key_data(jnp.asarray(key))
    raise TypeError(
        f"`key` must be a JAX PRNG key such as jax.random.key(0), got {type(key).__name__}"
        f"{' of dtype ' + str(key.dtype) if hasattr(key, 'dtype') else ''}."
    )


def check_dim(dim: Any) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
        raise ValueError(f"`dim` must be a positive integer (the number of features), got {dim!r}.")
    return int(dim)


def _jacobians(problem: Any) -> list[PyTree]:
    """Per output leaf, the per-example Jacobian tree ``(n, *example_shape, *param_shape)``."""
    params, x, kw = problem.params, problem.x1, problem.kwargs1
    if problem.vmap is not None:
        x_axes, kw_axes = problem.vmap_in_axes(x, kw)
        jac = jax.vmap(jax.jacrev(problem.f_example), in_axes=(None, x_axes, kw_axes))(
            params, x, kw
        )
        return problem.fx_treedef.flatten_up_to(jac)
    jac = jax.jacrev(lambda p: problem.f(p, x, **kw))(params)
    return problem.fx_treedef.flatten_up_to(jac)  # batch axis 0 of every output, as given


def features_of(
    problem: Any, key: jax.Array, dim: int, projection: str, elementwise: dict | None = None
) -> PyTree:
    """``J P / √dim`` of every output leaf of ``problem`` (its ``x1``), per example.

    ``elementwise``: the param leaves of ``problem`` (index: path) scaled by an elementwise
    preconditioner; those the structured projection sketches instead of projecting by
    ``P_in ⊗ P_out`` are named in a one-time warning."""
    if projection == "structured":
        sketched: set[int] = set()
        out = kronecker_features(problem, key, dim, sketched)
        lost = [path for i, path in (elementwise or {}).items() if i in sketched]
        if out is not None and lost:
            warn_once(
                ("elementwise preconditioner, structured features", tuple(lost)),
                'gradient_features(projection="structured"): the preconditioner is elementwise '
                f"(an array) on {', '.join(lost[:4])}{' …' if len(lost) > 4 else ''}; such a "
                "leaf is scaled elementwise, which hides its layer's structure, so it takes "
                "the CountSketch of its per-example gradient instead of the Kronecker "
                "projection P_in ⊗ P_out (still unbiased, but that gradient is formed: slower "
                "and more memory on large layers). A scalar D per leaf (or a mask) keeps the "
                "Kronecker projection.",
                stacklevel=6,
            )
        if out is not None:
            return jax.tree.unflatten(problem.fx_treedef, out)
        projection = "gaussian"  # the factors could not be recorded: every leaf dense
    out = []
    for jac in _jacobians(problem):
        leaves = jax.tree.leaves(jac)
        total = None
        for index, (leaf, param) in enumerate(zip(leaves, jax.tree.leaves(problem.params))):
            lead = leaf.shape[: leaf.ndim - param.ndim]
            rows = leaf.reshape(math.prod(lead), param.size)
            phi = project_leaf(rows, leaf_key(key, index), dim, projection).reshape(*lead, dim)
            total = phi if total is None else total + phi
        out.append(total / jnp.sqrt(jnp.asarray(dim, total.dtype)))
    return jax.tree.unflatten(problem.fx_treedef, out)


def features_program(
    pure: PureFn, dim: int, projection: str, cotangents: Any, preconditioner: Any
) -> Callable[[PyTree, PyTree, dict, jax.Array], PyTree]:
    """One compiled ``(params, x, kwargs, key) -> Φ`` (reused by every block of a dataset,
    and by later calls with the same model and settings)."""
    vmap = canonicalize_vmap_axes(pure.vmap_axes)
    ident = (id(pure.apply), repr(vmap), dim, projection, id(cotangents), id(preconditioner))
    held = (pure.apply, cotangents, preconditioner)
    if ident in _PROGRAMS and all(a is b for a, b in zip(_PROGRAMS[ident][0], held)):
        return _PROGRAMS[ident][1]

    def run(params, x, kwargs, key):
        problem, _ = transformed_problem(
            pure.apply, x, None, params, kwargs, (), (), vmap, cotangents, preconditioner
        )
        elementwise = None
        if projection == "structured" and preconditioner is not None:
            pre = precondition(pure.apply, preconditioner, params)
            paths = jax.tree_util.tree_flatten_with_path(params)[0]
            # a leaf of fewer than two axes is never projected by P_in ⊗ P_out (it has no
            # "in" and "out" axes), so only the larger ones lose it
            ranked = [k for k in pre.elementwise if np.ndim(pre.params[k]) >= 2]
            names = [jax.tree_util.keystr(paths[pre.kept[k]][0]) for k in ranked]
            elementwise = dict(zip(ranked, names))
        return features_of(problem, key, dim, projection, elementwise)

    if len(_PROGRAMS) >= 16:
        _PROGRAMS.pop(next(iter(_PROGRAMS)))
    _PROGRAMS[ident] = (held, jax.jit(run))
    return _PROGRAMS[ident][1]


_PROGRAMS: dict = {}  # the last few programs, kept with what they close over


def gradient_features(
    f: Callable[..., PyTree] | PureFn,
    params: PyTree = None,
    x: PyTree = None,
    *,
    dim: int,
    key: jax.Array,
    projection: str = "gaussian",
    cotangents: Any = None,
    preconditioner: Any = None,
    vmap_axes: Any = None,
    batch_size: int | None = None,
    out: str | None = None,
    progress: bool = False,
    **kwargs: Any,
) -> PyTree:
    """Random features ``Φ = J P / √dim`` whose inner products estimate the NTK.

    ``P`` is a ``(p, dim)`` matrix of independent unit-variance entries (Gaussian or ±1), so
    ``E[Φ(x_i) Φ(x_j)ᵀ] = J(x_i) J(x_j)ᵀ = Θ(x_i, x_j)`` exactly, with a relative error of order
    ``√(2/dim)`` (for Gaussian entries: ``Var[Φ_i·Φ_j] = (Θ_ii Θ_jj + Θ_ij²) / dim``). ``P`` is a
    function of ``key`` and the param layout only: the same key gives the same features for an
    example in any batch, and it is generated one ``65536 × 256`` block at a time from
    ``fold_in`` keys, never held whole (a 100M-parameter model with ``dim=8192`` needs its
    per-example gradients and one block, not a 3 TB matrix). Each example's gradient is
    formed once, then projected (TRAK's and LESS's dense projection): ``2·p·dim`` FLOPs per
    example on top of the gradient, and ``p·dim`` random draws per block of examples.

    Args:
      f: ``f(params, x, **kwargs)``, or a :class:`~ntk_zoo.PureFn`.
      params: the params (a ``PureFn``'s own when ``None``).
      x: the examples.
      dim: the number of features (``>= 1``).
      key: a JAX PRNG key (``jax.random.key(seed)``).
      projection: ``"gaussian"`` or ``"rademacher"`` entries (the same variance bound; ±1
        entries are cheaper to draw), or ``"structured"``: each dense and convolution leaf
        (a ``dot_general`` or ungrouped convolution kernel, every use of it alike) projected
        by a Kronecker product ``P_in ⊗ P_out`` applied to the layer's inputs and output
        cotangents, as structured derivatives record them, never forming that leaf's
        per-example gradient (``T·(d_in·k_in + d_out·k_out) + T·dim`` FLOPs per example and
        use for ``T`` positions, ``d_in·k_in + d_out·k_out`` draws); the positions and uses
        of a leaf are summed after the projection (``Σ_t (P_inᵀ x_t) ⊗ (P_outᵀ g_t)``, the
        projection of ``Σ_t x_t g_tᵀ``). ``dim`` is split per leaf into ``k_in × k_out``
        (:func:`ntk_zoo.structured.kronecker_split`): ``⌈√dim⌉`` each, the grid's first
        ``dim`` columns, or one side kept exact when it is small (≲ ``2√dim``, e.g. ten
        logits). Still ``E[Φ Φᵀ] = Θ`` exactly, but with a larger variance than a dense
        projection of the same ``dim``: for a one-position gradient the relative variance of
        ``‖G‖²`` is ``2/k_in + 2/k_out + 4/dim`` (≈ ``4/√dim``: 0.0625 at ``dim=4096``)
        against ``2/dim`` (0.0005), less for gradients summed over many positions, and
        averaged over the independent leaves. Every other leaf (biases, norms, embeddings,
        batched products) is sketched from its per-example Jacobian by a CountSketch (each
        element to one random column with a random sign: variance at most the Gaussian
        projection's, ``O(p)`` per example instead of ``2·p·dim``). Where the factors cannot
        be recorded (a function JAX cannot transpose) every leaf falls back to the dense
        Gaussian projection, with a warning.
      cotangents: as in :func:`ntk_zoo.ntk_fn`: ``"pntk"``, an array, a pytree or a callable
        ``v(fx, x)``; then one feature vector per example, ``Φ`` of shape ``(n, dim)`` with
        ``E[Φ Φᵀ] = v_iᵀ Θ v_j`` (plus any output axes ``v`` does not cover, before ``dim``).
      preconditioner: ``D`` of ``J D Jᵀ`` (see :func:`ntk_zoo.ntk_fn`). With
        ``projection="structured"``, a scalar ``D`` per leaf (or a mask) keeps each dense and
        convolution leaf on the Kronecker projection (the leaf is a scalar multiple of the
        param); an elementwise ``D`` (an array) scales the leaf elementwise, which hides the
        layer's structure, so that leaf takes the CountSketch of its per-example gradient
        instead (exact in expectation, but the gradient is formed), with a one-time warning
        naming the leaves.
      vmap_axes: the batch axes, as for :func:`ntk_zoo.ntk_fn` (``None`` for a plain ``f``:
        one Jacobian of the whole batch; a ``PureFn``'s own otherwise).
      batch_size: examples per block (axis 0 of ``x``; needs ``vmap_axes`` with batch axis
        0): one compiled program for all blocks, the last one padded. ``None``: one block.
      out: a ``.npy`` path (features with ``cotangents``: one array): the features are written
        there block by block and returned as a ``np.memmap``; memory stays bounded by a block.
        Resumable: finished blocks are recorded in ``<out>.blocks.json`` with a fingerprint of
        the inputs and settings, and a rerun computes only the missing ones (a file from other
        inputs is refused). Several processes (after ``jax.distributed.initialize``, each
        passing the same inputs and a path they all see) share the blocks, each recording its
        own (``<out>.blocks.<i>.json``); each returns the whole file, and a rerun with any
        number of processes computes what none recorded.
      progress: a progress bar over the blocks (on process 0).
      **kwargs: keyword arguments of ``f`` (the same for every block).

    Returns:
      Without ``cotangents``, one array per output leaf of shape ``(n, *example_shape, dim)``
      (a pytree for pytree outputs); with them, ``(n, dim)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import ntk_zoo
      >>> f = lambda p, x: jnp.tanh(x @ p["w"]) @ p["v"]
      >>> params = {"w": jnp.ones((3, 8)) / 3, "v": jnp.ones((8, 2)) / 8}
      >>> x = jnp.arange(12.0).reshape(4, 3) / 12
      >>> phi = ntk_zoo.gradient_features(
      ...     f, params, x, dim=64, key=jax.random.key(0), cotangents="pntk", vmap_axes=0)
      >>> phi.shape, ntk_zoo.kernel_from_features(phi).shape
      ((4, 64), (4, 4))
      >>> phi = ntk_zoo.gradient_features(  # x @ w and h @ v by P_in ⊗ P_out
      ...     f, params, x, dim=64, key=jax.random.key(0), projection="structured", vmap_axes=0)
      >>> phi.shape
      (4, 2, 64)
    """
    dim = check_dim(dim)
    key = check_key(key)
    check_projection(projection)
    pure = as_pure_fn(f, params, vmap_axes, caller="gradient_features")
    program = features_program(pure, dim, projection, cotangents, preconditioner)
    if batch_size is None and out is None:
        return program(pure.params, x, kwargs, key)
    if pure.vmap_axes is None:
        raise ValueError(
            "gradient_features in blocks (batch_size= or out=) needs independent examples: "
            "give vmap_axes (e.g. vmap_axes=0)."
        )
    settings = dict(dim=dim, projection=projection, cotangents=cotangents, pre=preconditioner)
    return stream(program, pure.params, x, kwargs, key, batch_size, out, settings, progress)
