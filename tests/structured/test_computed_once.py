"""Cotangents computed once (``_factors._computed_once``): a use whose ``∂f/∂y`` is a long
elementwise chain (a residual stream's, through every later layer) gets it computed into a
buffer once, not fused into (and recomputed by) every einsum that reads it; short chains stay
fused. The kernel stays exact and differentiable."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import ntk_zoo
from ntk_zoo.structured import _factors
from tests.oracle import oracle_ntk, rel_error

EXACT = 1e-10
RNG = np.random.default_rng(0)
DEPTH, WIDTH = 3, 4
PARAMS = [
    {"w": RNG.standard_normal((WIDTH, WIDTH)) / 2, "b": RNG.standard_normal(WIDTH) / 4}
    for _ in range(DEPTH)
]
X = RNG.standard_normal((3, WIDTH))


def _residual(p, x):  # a pre-norm residual stack: each layer's output reaches the logits
    for q in p:  # through every later layer norm and residual add
        h = (x - x.mean()) * jax.lax.rsqrt(((x - x.mean()) ** 2).mean() + 1e-6)
        x = x + jnp.tanh(h @ q["w"] + q["b"])
    return x[:2]


def _plain(p, x):  # no chain longer than a tanh' and an add
    for q in p[:2]:
        x = jnp.tanh(x @ q["w"] + q["b"])
    return x[:2]


residual, plain = (jax.vmap(g, in_axes=(None, 0)) for g in (_residual, _plain))


def _kernel_fn(f):
    return ntk_zoo.ntk_fn(f, method="structured_derivatives", vmap_axes=0, trace_axes=())


def _whiles(f) -> int:
    """The ``while`` loops in the traced kernel program (nested calls printed inline)."""
    return str(jax.make_jaxpr(lambda p: _kernel_fn(f)(X, None, p))(PARAMS)).count(" while[")


def test_long_cotangent_chains_are_computed_once_and_short_ones_stay_fused(monkeypatch):
    cones = []
    record = _factors._cones

    def spy(program, consumers):
        out = record(program, consumers)
        cones.append(out)
        return out

    monkeypatch.setattr(_factors, "_cones", spy)
    residual_whiles = _whiles(residual)
    # the first layers' uses have chains through every later layer norm and residual add:
    # computed once; the last layers' are short: fused
    assert any(c >= _factors.ONCE_CONE for c in cones[0].values())
    assert 0 < residual_whiles
    assert _whiles(plain) == 0


def test_computed_once_cotangents_are_exact():
    f = residual
    for x2 in (None, X[:2] + 1):
        got = _kernel_fn(f)(X, x2, PARAMS)
        assert rel_error(got, oracle_ntk(f, X, x2, PARAMS, trace_axes=())) <= EXACT


def test_the_kernel_stays_differentiable_where_cotangents_are_computed_once():
    # a while loop has no transpose: the loop's derivative is the identity's (custom_jvp)
    def loss(p, method):
        kernel_fn = ntk_zoo.ntk_fn(residual, method=method, vmap_axes=0, trace_axes=())
        return kernel_fn(X, None, p).sum()

    got = jax.grad(loss)(PARAMS, "structured_derivatives")
    want = jax.grad(loss)(PARAMS, "jacobian_contraction")
    assert rel_error(got, want) <= 1e-10
