"""Lanczos with full reorthogonalisation on the matrix-free kernel operator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from ntk_zoo.core import PureFn
from ntk_zoo.spectrum._operator import NtkOperator, ntk_operator

PyTree = Any


class LanczosSpectrum(NamedTuple):
    """Extreme eigenvalue estimates of ``Θ(x, x)`` from :func:`lanczos`.

    ``top`` holds the ``k`` largest Ritz values (descending), ``bottom`` the ``k`` smallest
    (ascending, so ``bottom[0]`` is ``lambda_min``). ``condition_number`` is
    ``lambda_max / lambda_min`` and ``inf`` when ``lambda_min <= 0`` (reported, never patched by
    an epsilon). ``lambda_max_bound`` and ``lambda_min_bound`` are the residual norms
    ``‖Θ y − θ y‖`` of the Ritz pairs: an eigenvalue of ``Θ`` lies within that distance of each
    estimate. ``ritz_values`` are all final Ritz values, descending. ``converged`` tells whether
    every wanted estimate met ``tol`` before ``num_iters`` ran out (or the space was exhausted).
    """

    top: np.ndarray
    bottom: np.ndarray
    lambda_max: float
    lambda_min: float
    condition_number: float
    num_iters: int
    converged: bool
    lambda_max_bound: float
    lambda_min_bound: float
    ritz_values: np.ndarray


def _rng(key: Any) -> np.random.Generator:
    """A NumPy generator from an ``int`` seed or a JAX PRNG key (reproducible either way)."""
    if isinstance(key, int | np.integer):
        return np.random.default_rng(int(key))
    return np.random.default_rng(int(jax.random.randint(key, (), 0, 2**31 - 1)))


def _orthogonalise(w: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """``w`` minus its projection on the rows of ``basis``, twice (classical Gram-Schmidt)."""
    for _ in range(2):
        w = w - basis.T @ (basis @ w)
    return w


def tridiagonal(alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """The symmetric tridiagonal matrix with diagonal ``alpha`` and off-diagonal ``beta``."""
    return np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)


def lanczos_iterations(
    matvec: Callable[[np.ndarray], np.ndarray],
    start: np.ndarray,
    num_iters: int,
    *,
    rng: np.random.Generator | None = None,
    done: Callable[[np.ndarray, np.ndarray, float], bool] | None = None,
    bar: Any = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Runs Lanczos with full reorthogonalisation (float64); returns ``(alpha, beta, β_last)``.

    ``alpha`` (``m``) and ``beta`` (``m - 1``) define the tridiagonal ``T_m = Qᵀ Θ Q`` and
    ``β_last`` the residual coupling to the next vector. On breakdown (an invariant subspace:
    ``β`` at rounding level) Lanczos restarts from a random vector orthogonal to the basis when
    ``rng`` is given (so repeated eigenvalues are found) and stops otherwise.
    ``done(alpha, beta, β_last)`` may stop it early.
    """
    size = start.size
    num_iters = min(num_iters, size)
    basis = np.zeros((num_iters, size))
    alpha, beta = [], []
    q = start / np.linalg.norm(start)
    scale = 0.0
    b = 0.0
    for j in range(num_iters):
        basis[j] = q
        w = np.asarray(matvec(q), np.float64).reshape(size)
        a = float(q @ w)
        w = _orthogonalise(w, basis[: j + 1])
        b = float(np.linalg.norm(w))
        alpha.append(a)
        scale = max(scale, abs(a) + b)
        if bar is not None:
            bar.update(1)
        if j + 1 == num_iters:
            break
        if b <= np.sqrt(size) * np.finfo(np.float64).eps * scale:  # invariant subspace
            if rng is None:
                b = 0.0
                break
            w = _orthogonalise(rng.standard_normal(size), basis[: j + 1])
            b_next, b = 0.0, float(np.linalg.norm(w))
        else:
            b_next = b
        beta.append(b_next)
        q = w / b
        if done is not None and done(np.array(alpha), np.array(beta[:-1]), b_next):
            b = b_next
            break
    return np.array(alpha), np.array(beta[: len(alpha) - 1]), b


def lanczos(
    f: Callable[..., jax.Array] | PureFn | NtkOperator,
    params: PyTree = None,
    x: PyTree = None,
    *,
    num_iters: int = 100,
    k: int = 1,
    tol: float = 1e-8,
    block_size: int = 256,
    trace_axes: Any = (-1,),
    key: Any = 0,
    progress: bool = False,
    **kwargs: Any,
) -> LanczosSpectrum:
    """Extreme eigenvalues of ``Θ(x, x)`` by Lanczos on the matrix-free operator.

    Never forms the ``n × n`` kernel: each iteration is one product ``Θ·v`` of
    :func:`ntk_operator` (one VJP and one JVP pass over the data, in blocks) and a full
    reorthogonalisation against the ``Q`` basis (``num_iters × n`` floats on the host). The
    Ritz values of ``T_m = Qᵀ Θ Q`` approach the extreme eigenvalues from inside the spectrum;
    ``λ_max`` converges fast, ``λ_min`` of an ill-conditioned NTK slowly (its residual bound is
    reported). With ``num_iters >= n`` (``n·o``) the result is exact up to rounding.

    Iteration stops once the ``k`` largest and ``k`` smallest Ritz values each have a residual
    bound ``<= tol·|θ|`` (checked every few iterations), after ``num_iters``, or when the Krylov
    space is the whole space.

    Args:
      f: ``f(params, x, **kwargs)`` with ``(n, o)`` outputs, a :class:`~ntk_zoo.PureFn`, or an
        :class:`NtkOperator` (then ``params``, ``x``, ``block_size``, ``trace_axes`` and
        ``kwargs`` are its own).
      params: the parameters (default: the ``PureFn``'s).
      x: the dataset, examples along axis 0.
      num_iters: the most Lanczos iterations (operator products).
      k: how many eigenvalues to report at each end.
      tol: relative residual at which the wanted Ritz values count as converged.
      block_size: examples per block of the operator.
      trace_axes: ``(-1,)`` for the logit-averaged ``(n, n)`` kernel, ``()`` for ``(n·o, n·o)``.
      key: an ``int`` seed or a JAX PRNG key for the random start vector.
      progress: show a tqdm bar over iterations.
      **kwargs: passed to ``f``.

    Returns:
      A :class:`LanczosSpectrum`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from ntk_zoo.spectrum import lanczos
      >>> f = lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"]
      >>> k1, k2 = jax.random.split(jax.random.key(0))
      >>> params = {"w1": jax.random.normal(k1, (4, 32)), "w2": jax.random.normal(k2, (32, 2))}
      >>> x = jax.random.normal(k2, (20, 4))
      >>> result = lanczos(f, params, x, num_iters=20, k=2, block_size=8)
      >>> result.top.shape, result.num_iters, bool(result.lambda_max >= result.top[1])
      ((2,), 20, True)

    Reference: C. Lanczos, "An iteration method for the solution of the eigenvalue problem of
    linear differential and integral operators", 1950; Golub & Van Loan, *Matrix Computations*,
    §10.1 (full reorthogonalisation).
    """
    op = (
        f
        if isinstance(f, NtkOperator)
        else ntk_operator(f, params, x, block_size=block_size, trace_axes=trace_axes, **kwargs)
    )
    if not isinstance(k, int | np.integer) or not 1 <= k <= op.size:
        raise ValueError(
            f"k={k!r} eigenvalues at each end were asked of an operator of size {op.size}; "
            f"choose 1 <= k <= {op.size}."
        )
    if not isinstance(num_iters, int | np.integer) or num_iters < k:
        raise ValueError(f"num_iters={num_iters!r} must be an integer >= k={k}.")
    num_iters = min(int(num_iters), op.size)
    rng = _rng(key)
    start = rng.standard_normal(op.size)

    def converged(alpha, beta, b_last):
        m = alpha.size
        if m < k or m % max(1, m // 10):  # a geometric schedule of checks
            return False
        from scipy.linalg import eigh_tridiagonal  # the wanted pairs only: O(m·k), not O(m³)

        for index in ((0, k - 1), (m - k, m - 1)):
            theta, vecs = eigh_tridiagonal(alpha, beta, select="i", select_range=index)
            if np.any(abs(b_last * vecs[-1]) > tol * np.abs(theta)):
                return False
        return True

    from tqdm.auto import tqdm

    with tqdm(total=num_iters, desc="Lanczos", unit="it", disable=not progress) as bar:
        alpha, beta, b_last = lanczos_iterations(
            op, start, num_iters, rng=rng, done=converged, bar=bar
        )
    m = alpha.size
    theta, vecs = np.linalg.eigh(tridiagonal(alpha, beta))
    bounds = abs(b_last * vecs[-1]) if m < op.size else np.zeros(m)
    wanted = np.r_[np.arange(min(k, m)), np.arange(max(m - k, 0), m)]
    lmax, lmin = float(theta[-1]), float(theta[0])
    return LanczosSpectrum(
        top=theta[::-1][:k].copy(),
        bottom=theta[:k].copy(),
        lambda_max=lmax,
        lambda_min=lmin,
        condition_number=lmax / lmin if lmin > 0 else float("inf"),
        num_iters=m,
        converged=m == op.size or bool(np.all(bounds[wanted] <= tol * np.abs(theta[wanted]))),
        lambda_max_bound=float(bounds[-1]),
        lambda_min_bound=float(bounds[0]),
        ritz_values=theta[::-1].copy(),
    )
