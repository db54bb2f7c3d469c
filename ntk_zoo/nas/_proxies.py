"""Training-free proxies from an NTK, their sign conventions, and the plain baselines.

Every proxy is turned into a **score where higher predicts higher accuracy**, so that a
positive rank correlation between score and accuracy means the proxy works as its paper says:

* ``condition_number`` κ = λ_max / λ_min, score ``−log10 κ``. TE-NAS (Chen, Gong & Wang,
  ICLR 2021): well-conditioned kernels train faster, κ is negatively correlated with accuracy,
  so **lower κ is better**. (TE-NAS itself uses the kernel of the summed logits: ``kernel=
  "sum_logits"``.)
* ``trace`` tr Θ(x, x), score ``log10``. NASI (Shu et al., ICLR 2022) maximises the NTK's trace
  norm, subject to an upper bound ν that keeps training stable (omitted here): **higher is
  better**.
* ``lambda_max``, score ``log10``. No paper fixes this sign; we score it like the trace (λ_max
  dominates the trace of an ill-conditioned kernel): **higher is better**, and τ is reported
  with that sign, so a negative τ says the opposite sign would have ranked better.
* ``n_params`` (differentiated parameters) and ``flops`` (of one forward pass on one example),
  score ``log10``: the plain baselines, **more is better**. Published NTK proxies often fail to
  beat them (ZiCo, ICLR 2023), so they are always reported beside the NTK scores.

A κ of ``inf`` (``λ_min <= 0``, a singular kernel) scores ``-inf``: worst, never hidden by a
fudge term. The logarithms change no ranking; they only make plots readable.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from ntk_zoo.core import PureFn, as_pure_fn
from ntk_zoo.engine import forward_flops, ntk_fn
from ntk_zoo.spectrum import spectrum


class Proxy(NamedTuple):
    """How a proxy is scored: ``score = sign · log10(value)``; a higher score predicts better."""

    label: str
    sign: int
    source: str


PROXIES: dict[str, Proxy] = {
    "condition_number": Proxy("−log₁₀ κ", -1, "TE-NAS (lower κ is better)"),
    "trace": Proxy("log₁₀ trace Θ", +1, "NASI (higher trace is better)"),
    "lambda_max": Proxy("log₁₀ λ_max", +1, "no published sign; higher taken as better"),
    "n_params": Proxy("log₁₀ #params", +1, "baseline"),
    "flops": Proxy("log₁₀ FLOPs", +1, "baseline"),
}
KERNELS = ("mean_logits", "sum_logits", "full")


def kernel_proxies(kernel: ArrayLike) -> dict[str, float]:
    """Raw NTK proxies of a square kernel ``Θ(x, x)`` (``(n, n)`` or ``(n, n, o, o)``).

    Returns ``condition_number`` (``inf`` when ``lambda_min <= 0``), ``trace``, ``lambda_max``
    and ``lambda_min`` (float64 eigenvalues of the symmetrised kernel), and ``n_nonpositive``.

    Example:
      >>> import numpy as np
      >>> p = kernel_proxies(np.diag([4.0, 1.0, 2.0]))
      >>> p["condition_number"], p["trace"], p["lambda_max"], p["lambda_min"]
      (4.0, 7.0, 4.0, 1.0)
    """
    s = spectrum(np.asarray(kernel))
    return {
        "condition_number": s.condition_number,
        "trace": s.trace,
        "lambda_max": s.lambda_max,
        "lambda_min": s.lambda_min,
        "n_nonpositive": s.n_nonpositive,
    }


def proxy_score(name: str, value: float) -> float:
    """The higher-is-better score of a raw proxy value: ``sign · log10(value)`` (see ``PROXIES``).

    ``κ = inf`` (a singular kernel) and a zero trace or λ_max score ``-inf``, the worst.

    Example:
      >>> proxy_score("condition_number", 100.0), proxy_score("trace", 1000.0)
      (-2.0, 3.0)
      >>> proxy_score("condition_number", float("inf"))
      -inf
    """
    if name not in PROXIES:
        raise ValueError(f"Unknown proxy {name!r}; known: {sorted(PROXIES)}.")
    sign = PROXIES[name].sign
    value = float(value)
    if math.isnan(value):
        return float("nan")
    log = math.log10(value) if value > 0 else -math.inf
    return sign * log


def proxy_scores(values: dict[str, float]) -> dict[str, float]:
    """``proxy_score`` of every known proxy present in ``values``.

    Example:
      >>> proxy_scores({"condition_number": 10.0, "n_params": 1e6, "lambda_min": 0.5})
      {'condition_number': -1.0, 'n_params': 6.0}
    """
    return {name: proxy_score(name, values[name]) for name in PROXIES if name in values}


def _count(params: Any) -> int:
    return sum(math.prod(np.shape(leaf)) for leaf in jax.tree.leaves(params))


def ntk_proxies(
    f: Callable[..., Any] | PureFn,
    x: ArrayLike,
    params: Any = None,
    *,
    kernel: str = "mean_logits",
    method: str = "auto",
    vmap_axes: Any = None,
) -> dict[str, float]:
    """Every proxy of a model on the batch ``x``: NTK figures, #params and FLOPs per example.

    Args:
      f: ``f(params, x)`` returning logits ``(n, o)``, or a :class:`~ntk_zoo.PureFn`.
      x: the batch the kernel ``Θ(x, x)`` is computed on (TE-NAS uses one batch at init).
      params: the parameters (default: the ``PureFn``'s).
      kernel: ``"mean_logits"`` (``(n, n)``, the mean over logits: ``trace_axes=(-1,)``),
        ``"sum_logits"`` (the kernel of the summed logits, ``1ᵀ Θ 1`` per pair, as TE-NAS) or
        ``"full"`` (the ``(n·o, n·o)`` matrix).
      method: the NTK method (see :class:`ntk_zoo.Method`).
      vmap_axes: as in :func:`ntk_zoo.ntk_fn` (default: the ``PureFn``'s).

    Returns:
      ``kernel_proxies`` of the kernel plus ``n_params`` (differentiated parameters) and
      ``flops`` (of one forward pass on one example).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> f = lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"]
      >>> k1, k2 = jax.random.split(jax.random.key(0))
      >>> params = {"w1": jax.random.normal(k1, (3, 8)), "w2": jax.random.normal(k2, (8, 2))}
      >>> p = ntk_proxies(f, jax.random.normal(k2, (5, 3)), params, vmap_axes=0)
      >>> p["n_params"], p["condition_number"] >= 1.0
      (40, True)
    """
    if kernel not in KERNELS:
        raise ValueError(f"Unknown proxy kernel {kernel!r}; use one of {KERNELS}.")
    pure = as_pure_fn(f, params, vmap_axes, caller="ntk_proxies")
    params = pure.params
    apply = pure.apply
    if kernel == "sum_logits":
        apply = lambda p, x, **kw: jnp.sum(pure.apply(p, x, **kw), axis=-1, keepdims=True)
    kernel_fn = ntk_fn(
        pure._replace(apply=apply, params=params),
        method=method,
        trace_axes=() if kernel == "full" else (-1,),
        vmap_axes=vmap_axes,
    )
    x = jnp.asarray(x)
    out = kernel_proxies(kernel_fn(x))
    out["n_params"] = _count(params)
    out["flops"] = forward_flops(pure.apply, params, x[:1], {})
    return out
