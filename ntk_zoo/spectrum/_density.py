"""Stochastic Lanczos quadrature: the eigenvalue density of ``Θ(x, x)`` without the kernel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from ntk_zoo.core import PureFn
from ntk_zoo.spectrum._lanczos import _rng, lanczos_iterations, tridiagonal
from ntk_zoo.spectrum._operator import NtkOperator, ntk_operator

PyTree = Any


class SpectralDensity(NamedTuple):
    """An estimate of the eigenvalue density ``(1/N) Σ_i δ(λ − λ_i)`` of an ``N × N`` kernel.

    ``nodes`` and ``weights`` (``num_probes × num_iters``) are the Gauss quadrature rule of each
    probe, the weights of each probe summing to ``1/num_probes`` (all of them to 1), so
    ``Σ weights·g(nodes)`` estimates ``(1/N) tr g(Θ)``; ``Σ weights·nodes`` estimates
    ``tr Θ / N``. ``density`` is that measure smoothed by a Gaussian of width ``sigma`` and
    evaluated on ``grid``; it integrates to 1 when the grid covers the nodes.
    """

    nodes: np.ndarray
    weights: np.ndarray
    grid: np.ndarray
    density: np.ndarray
    sigma: float


def gaussian_density(
    nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, sigma: float
) -> np.ndarray:
    """``Σ_i w_i N(grid; nodes_i, sigma²)``."""
    z = (np.asarray(grid)[:, None] - np.ravel(nodes)[None, :]) / sigma
    return np.exp(-0.5 * z**2) @ np.ravel(weights) / (sigma * np.sqrt(2 * np.pi))


def spectral_density(
    f: Callable[..., jax.Array] | PureFn | NtkOperator,
    params: PyTree = None,
    x: PyTree = None,
    *,
    num_probes: int = 10,
    num_iters: int = 30,
    grid: int | np.ndarray = 1000,
    sigma: float | None = None,
    block_size: int = 256,
    trace_axes: Any = (-1,),
    key: Any = 0,
    progress: bool = False,
    **kwargs: Any,
) -> SpectralDensity:
    """The eigenvalue density of ``Θ(x, x)`` by stochastic Lanczos quadrature.

    For each Rademacher probe ``z`` (``±1`` entries), ``num_iters`` Lanczos steps from
    ``z/‖z‖`` give ``T = Qᵀ Θ Q`` with eigenpairs ``(θ_j, s_j)``; ``θ_j`` with weights
    ``s_j[0]²`` is a Gauss quadrature rule for ``zᵀ g(Θ) z / N``, whose mean over probes is
    ``(1/N) tr g(Θ)`` (Hutchinson). Costs ``num_probes·num_iters`` operator products, each one
    VJP and one JVP pass over the data in blocks; the kernel is never formed.

    Args:
      f: ``f(params, x, **kwargs)`` with ``(n, o)`` outputs, a :class:`~ntk_zoo.PureFn`, or an
        :class:`NtkOperator`.
      params: the parameters (default: the ``PureFn``'s).
      x: the dataset, examples along axis 0.
      num_probes: random probe vectors.
      num_iters: Lanczos steps per probe (quadrature nodes per probe).
      grid: the points to evaluate the smoothed density on, or how many equally spaced points
        to span ``[min node − 5σ, max node + 5σ]`` with.
      sigma: the Gaussian smoothing width; default ``(max node − min node) / 100``.
      block_size: examples per block of the operator.
      trace_axes: ``(-1,)`` (``(n, n)`` kernel, averaged over logits) or ``()``.
      key: an ``int`` seed or a JAX PRNG key for the probes.
      progress: show a tqdm bar over probes.
      **kwargs: passed to ``f``.

    Returns:
      A :class:`SpectralDensity`.

    Example:
      >>> import numpy as np
      >>> from ntk_zoo.spectrum import ntk_operator, spectral_density
      >>> import jax.numpy as jnp
      >>> f = lambda p, x: jnp.tanh(x @ p)
      >>> x = np.random.default_rng(0).normal(size=(12, 3))
      >>> d = spectral_density(f, jnp.ones((3, 2)) / 2, x, num_probes=4, num_iters=6)
      >>> d.nodes.shape, round(float(d.weights.sum()), 6)
      ((4, 6), 1.0)
      >>> round(float(np.trapezoid(d.density, d.grid)), 3)
      1.0

    Reference: L. Lin, Y. Saad, C. Yang, "Approximating spectral densities of large matrices",
    SIAM Review 2016; B. Ghorbani, S. Krishnan, Y. Xiao, "An investigation into neural net
    optimization via Hessian eigenvalue density", ICML 2019.
    """
    op = (
        f
        if isinstance(f, NtkOperator)
        else ntk_operator(f, params, x, block_size=block_size, trace_axes=trace_axes, **kwargs)
    )
    if not isinstance(num_probes, int | np.integer) or num_probes < 1:
        raise ValueError(f"num_probes must be a positive integer, got {num_probes!r}.")
    if not isinstance(num_iters, int | np.integer) or num_iters < 1:
        raise ValueError(f"num_iters must be a positive integer, got {num_iters!r}.")
    m = min(int(num_iters), op.size)
    rng = _rng(key)
    nodes = np.zeros((num_probes, m))
    weights = np.zeros((num_probes, m))

    from tqdm.auto import tqdm

    for p in tqdm(range(num_probes), desc="SLQ probes", unit="probe", disable=not progress):
        z = rng.choice([-1.0, 1.0], size=op.size)
        # No restart on breakdown: the Krylov space then holds z, and the rule is exact.
        alpha, beta, _ = lanczos_iterations(op, z, m)
        theta, vecs = np.linalg.eigh(tridiagonal(alpha, beta))
        nodes[p, : theta.size] = theta
        nodes[p, theta.size :] = theta[-1]  # unused slots carry zero weight
        weights[p, : theta.size] = vecs[0] ** 2 / num_probes
    if sigma is None:
        spread = float(nodes.max() - nodes.min())
        sigma = spread / 100 if spread > 0 else max(abs(float(nodes.max())), 1.0) * 1e-3
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}.")
    if isinstance(grid, int | np.integer):
        grid = np.linspace(nodes.min() - 5 * sigma, nodes.max() + 5 * sigma, int(grid))
    grid = np.asarray(grid, np.float64)
    return SpectralDensity(
        nodes, weights, grid, gaussian_density(nodes, weights, grid, sigma), sigma
    )
