"""A fully connected network in plain JAX, in NTK or standard parameterisation.

NTK parameterisation (Jacot et al., 2018) draws weights from N(0, 1) and scales each layer's
pre-activation by ``1/sqrt(fan_in)``; standard parameterisation folds that scale into the
initialisation. Both give the same function at initialisation, but different kernels.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from architectures._common import activation as get_activation
from architectures._common import add_bias, check_parameterization


def init(
    key: jax.Array,
    input_dim: int,
    widths: Sequence[int],
    out_dim: int,
    *,
    parameterization: str = "ntk",
    bias: bool = True,
    dtype: jnp.dtype = jnp.float32,
) -> dict:
    """Parameters ``{"dense_i": {"w", "b"}}`` of an MLP ``input_dim -> *widths -> out_dim``."""
    check_parameterization(parameterization)
    dims = [input_dim, *widths, out_dim]
    params = {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(dims)):
        key, sub = jax.random.split(key)
        w = jax.random.normal(sub, (fan_in, fan_out), dtype)
        if parameterization == "standard":
            w = w / jnp.sqrt(fan_in).astype(dtype)
        layer = {"w": w}
        if bias:
            layer["b"] = jnp.zeros((fan_out,), dtype)
        params[f"dense_{i}"] = layer
    return params


def apply(
    params: dict, x: jax.Array, *, activation: str = "relu", parameterization: str = "ntk"
) -> jax.Array:
    """``f(params, x)`` for ``x`` of shape ``(n, input_dim)``; returns ``(n, out_dim)``."""
    act = get_activation(activation)
    check_parameterization(parameterization)
    n_layers = len(params)
    h = x
    for i in range(n_layers):
        layer = params[f"dense_{i}"]
        w = layer["w"]
        if parameterization == "ntk":
            w = w / jnp.sqrt(w.shape[0]).astype(w.dtype)
        h = h @ w
        if "b" in layer:
            h = add_bias(h, layer["b"])
        if i < n_layers - 1:
            h = act(h)
    return h
