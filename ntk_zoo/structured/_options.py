"""The options of structured derivatives: how the uses of each param leaf are contracted."""

from __future__ import annotations

import dataclasses

USES = ("auto", "structured", "jacobian")
GRAMS = ("auto", "always", "never")


@dataclasses.dataclass(frozen=True)
class StructuredOptions:
    """How ``method="structured_derivatives"`` contracts the uses of each param leaf.

    Every choice is exact; they differ in time and memory only. The defaults choose per leaf by
    the roofline cost (``structured/_plan.py``); forcing a path is for tests, benchmarks and
    for checking the cost model's choice on a machine.

    Attributes:
      uses: ``"structured"`` — one einsum per pair of uses, each through the use's structured
        ``∂y/∂w``; ``"jacobian"`` — each use's Jacobian factor ``∂f/∂y · ∂y/∂w`` formed per
        example and summed, then ``J(x1) J(x2)ᵀ`` over the param axes (Jacobian contraction's
        arithmetic for that leaf); ``"auto"`` (default) — per leaf, the mix of least estimated
        cost.
      grams: whether uses with the same ``∂f/∂y`` (a dense layer's weight and bias) start from
        one shared cotangent Gram ``Σ (∂f/∂y)(x1)(∂f/∂y)(x2)``: ``"auto"`` (default) where it
        is estimated cheaper, ``"always"`` for every group with a use kept structured,
        ``"never"``.

    Example:
      >>> import jax.numpy as jnp, ntk_zoo
      >>> f = lambda p, x: jnp.tanh(x @ p["w"]) @ p["v"]
      >>> params, x = {"w": jnp.ones((3, 4)), "v": jnp.ones((4, 2))}, jnp.ones((2, 3))
      >>> options = ntk_zoo.StructuredOptions(uses="jacobian")
      >>> kernel_fn = ntk_zoo.ntk_fn(f, method="structured_derivatives", structured=options)
      >>> kernel_fn(x, None, params).shape
      (2, 2)
    """

    uses: str = "auto"
    grams: str = "auto"

    def __post_init__(self) -> None:
        for name, allowed in (("uses", USES), ("grams", GRAMS)):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(
                    f"StructuredOptions: `{name}` must be one of {allowed}, got {value!r}."
                )
