"""``monte_carlo_kernel_fn``: empirical kernels averaged over random initialisations."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from ntk_zoo.core import PureFn
from ntk_zoo.engine import Method, ntk_fn
from ntk_zoo.kernels._nngp import kernel_fn as empirical_kernel_fn
from ntk_zoo.kernels._nngp import nngp_fn
from ntk_zoo.parallel import batched

PyTree = Any

__all__ = ["monte_carlo_kernel_fn"]


class _Running:
    """Mean and spread of a stream of kernels (Welford's update, float64 on the host)."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, None, None

    def add(self, sample: PyTree) -> None:
        x = jax.tree.map(lambda a: np.asarray(a, np.float64), sample)
        self.count += 1
        if self.mean is None:
            self.mean = x
            self.m2 = jax.tree.map(np.zeros_like, x)
            return
        delta = jax.tree.map(lambda a, m: a - m, x, self.mean)
        self.mean = jax.tree.map(lambda m, d: m + d / self.count, self.mean, delta)
        self.m2 = jax.tree.map(lambda s, d, a, m: s + d * (a - m), self.m2, delta, x, self.mean)

    def std(self) -> PyTree:
        if self.count < 2:
            return jax.tree.map(lambda s: np.full_like(s, np.nan), self.m2)
        return jax.tree.map(lambda s: np.sqrt(s / (self.count - 1)), self.m2)


def _counts(n_samples: int | Sequence[int]) -> tuple[tuple[int, ...], bool]:
    if isinstance(n_samples, int | np.integer) and not isinstance(n_samples, bool):
        counts, generator = (int(n_samples),), False
    else:
        try:
            counts, generator = tuple(n_samples), True
        except TypeError:
            raise TypeError(
                f"n_samples must be an int or a sequence of ints, got {type(n_samples).__name__}."
            ) from None
    if not counts or any(
        not isinstance(n, int | np.integer) or isinstance(n, bool) or n < 1 for n in counts
    ):
        raise ValueError(f"n_samples must hold positive integers, got {n_samples!r}.")
    if any(b <= a for a, b in itertools.pairwise(counts)):
        raise ValueError(
            f"n_samples={n_samples!r} must be strictly increasing: the generator yields the "
            "running estimate as the count of samples grows."
        )
    return tuple(int(n) for n in counts), generator


def monte_carlo_kernel_fn(
    init_fn: Callable[[jax.Array], PyTree],
    apply_fn: Callable[..., PyTree] | PureFn,
    key: jax.Array,
    n_samples: int | Sequence[int],
    *,
    trace_axes: Any = (-1,),
    diagonal_axes: Any = (),
    vmap_axes: Any = None,
    method: Method | str = Method.AUTO,
    get: str | Sequence[str] | None = ("ntk",),
    batch_size: int | None = None,
    mesh: Any = None,
    progress: bool = False,
    return_std: bool = False,
) -> Callable[..., Any]:
    """Returns ``kernel_fn(x1, x2=None, **kwargs)``: kernels averaged over ``n_samples`` inits.

    ``K̂_n(x1, x2) = (1/n) Σ_{i<n} K(x1, x2; θ_i)`` with ``θ_i = init_fn(jax.random.fold_in(key,
    i))``: sample ``i`` depends only on ``key`` and ``i``, so any sample, any prefix of samples
    and any run can be reproduced, and a larger ``n_samples`` extends a smaller one. ``K`` is the
    empirical NTK (:func:`ntk_zoo.ntk_fn`) and/or NNGP (:func:`ntk_zoo.nngp_fn`), with their
    axis conventions. As ``n`` grows, the NNGP estimate tends to the NNGP kernel of the
    network's initialisation distribution, and at large width both tend to the
    infinite-width kernels (neural-tangents' ``monte_carlo_kernel_fn``, which draws its keys by
    splitting instead, so its samples differ).

    The spread is the unbiased sample standard deviation ``s`` of each kernel entry over the
    samples (``NaN`` for one sample); the standard error of the mean is ``s / √n``. Sums are
    accumulated in float64 on the host (Welford's update), one sample at a time.

    Passing a model:

    * a zoo model: ``init_fn = lambda k: architectures.build(config, key=k,
      input_shape=shape).params`` and ``apply_fn`` that ``PureFn`` (its ``apply`` and
      ``vmap_axes`` are used);
    * Flax linen: ``init_fn = lambda k: model.init(k, x[:1])["params"]``, ``apply_fn = lambda
      p, x: model.apply({"params": p}, x)``;
    * Haiku: ``init_fn = lambda k: net.init(k, x[:1])``, ``apply_fn = lambda p, x: net.apply(p,
      None, x)``;
    * any JAX model: ``init_fn(key) -> params`` and ``apply_fn(params, x, **kwargs)``.

    Args:
      init_fn: ``init_fn(key) -> params``.
      apply_fn: ``apply_fn(params, x, **kwargs)``, or a :class:`~ntk_zoo.PureFn` (its params
        are ignored; its ``vmap_axes`` is the default).
      key: a JAX key; sample ``i`` is initialised with ``jax.random.fold_in(key, i)``.
      n_samples: the number of samples, or a strictly increasing sequence of counts: then
        ``kernel_fn`` returns a generator of the estimates at each count (one pass over the
        samples).
      trace_axes: output axes to trace over (divided by their size).
      diagonal_axes: output axes of which only the diagonal is kept.
      vmap_axes: the batch axes (see :func:`ntk_zoo.ntk_fn`).
      method: the NTK method.
      get: ``"ntk"``, ``"nngp"``, a tuple of them, or ``None`` (both).
      batch_size: compute each sample's kernel through :func:`ntk_zoo.batched` in blocks of
        this many examples (needs ``vmap_axes``); ``None`` computes it in one call.
      mesh: with ``batch_size``, spread the blocks over devices (see :func:`ntk_zoo.batched`).
      progress: show a progress bar over samples (and over blocks, with ``batch_size``).
      return_std: also return the per-entry standard deviation over samples.

    Returns:
      ``kernel_fn(x1, x2=None, **kwargs)`` (keyword arguments go to ``apply_fn`` as for
      ``ntk_fn``). It returns the estimate — one kernel for a string ``get``, a named tuple
      ``MonteCarloKernel`` with one field per kind for a tuple — as NumPy float64 arrays, or
      ``(mean, std)`` of such with ``return_std``; or a generator of them when ``n_samples`` is
      a sequence.

    Example:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> import ntk_zoo
      >>> init_fn = lambda k: {"w": jax.random.normal(k, (3, 8)), "v": jnp.ones((8, 1))}
      >>> apply_fn = lambda p, x: jnp.tanh(x @ p["w"]) @ p["v"] / np.sqrt(8)
      >>> x = jnp.ones((4, 3))
      >>> mc = ntk_zoo.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(0), 5, get="ntk")
      >>> mc(x).shape
      (4, 4)
      >>> one = ntk_zoo.ntk_fn(apply_fn)(x, None, init_fn(jax.random.fold_in(jax.random.key(0), 0)))
      >>> first = ntk_zoo.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(0), 1, get="ntk")
      >>> bool(np.allclose(first(x), one))
      True
    """
    counts, generator = _counts(n_samples)
    if get is None:
        get = ("nngp", "ntk")
    single = isinstance(get, str)
    kinds = (get,) if single else tuple(get)
    if not kinds or len(set(kinds)) != len(kinds) or not set(kinds) <= {"nngp", "ntk"}:
        raise ValueError(
            f"get={get!r}: give 'nngp', 'ntk' or a tuple of them (each once), or None for both."
        )
    if mesh is not None and batch_size is None:
        raise ValueError("mesh spreads blocks over devices: give batch_size too.")
    if not callable(init_fn):
        raise TypeError("init_fn must be callable as init_fn(key) -> params.")
    axes = dict(trace_axes=trace_axes, diagonal_axes=diagonal_axes, vmap_axes=vmap_axes)
    if batch_size is None and len(kinds) == 2:  # both kernels from one compiled program
        both = empirical_kernel_fn(apply_fn, get=kinds, method=method, **axes)
        both = both.replace(default_params=None)  # a PureFn's params are not a sample

        def evaluate(x1, x2, params, kwargs):
            return dict(zip(kinds, both(x1, x2, params, **kwargs), strict=True))

    else:
        fns = {
            "ntk": lambda: ntk_fn(apply_fn, method=method, **axes),
            "nngp": lambda: nngp_fn(apply_fn, **axes),
        }
        kernels = {}
        for g in kinds:
            fn = fns[g]().replace(default_params=None)  # a PureFn's params are not a sample
            if batch_size is not None:  # blocks (batched takes one kernel at a time)
                fn = batched(fn, batch_size=batch_size, mesh=mesh, progress=progress)
            kernels[g] = fn

        def evaluate(x1, x2, params, kwargs):
            return {g: kernels[g](x1, x2, params, **kwargs) for g in kinds}

    result_type = None if single else _monte_carlo_type(kinds)

    def package(values: dict) -> Any:
        return values[kinds[0]] if single else result_type(*(values[g] for g in kinds))

    def estimates(x1: PyTree, x2: PyTree | None, kwargs: dict) -> Iterator[Any]:
        from tqdm.auto import tqdm

        running = {g: _Running() for g in kinds}
        wanted = set(counts)
        for i in tqdm(range(counts[-1]), desc="samples", disable=not progress):
            values = evaluate(x1, x2, init_fn(jax.random.fold_in(key, i)), kwargs)
            for g in kinds:
                running[g].add(values[g])
            if i + 1 in wanted:
                mean = package({g: running[g].mean for g in kinds})
                if return_std:
                    yield mean, package({g: running[g].std() for g in kinds})
                else:
                    yield mean

    def kernel_fn(x1: PyTree, x2: PyTree | None = None, **kwargs: Any) -> Any:
        if "params" in kwargs:
            raise TypeError(
                "monte_carlo_kernel_fn draws the params itself (init_fn); do not pass `params`."
            )
        stream = estimates(x1, x2, kwargs)
        if generator:
            return stream
        *_, last = stream
        return last

    kernel_fn.get = get  # what a plain-array result is, for predict.gradient_descent_mse_ensemble
    return kernel_fn


@functools.cache
def _monte_carlo_type(kinds: tuple[str, ...]) -> type:
    return NamedTuple("MonteCarloKernel", [(g, Any) for g in kinds])
