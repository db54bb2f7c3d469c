"""Structured derivatives equal the float64 oracle on every function of the grid (the whole grid,
not a sample), and the fallbacks warn once per primitive and stay exact."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import pytest

import ntk_zoo
from ntk_zoo.structured import _warnings
from tests.oracle import oracle_ntk, rel_error
from tests.structured.grid import MODELS

EXACT = 1e-10


def _sd(m, **kw):
    kernel_fn = ntk_zoo.ntk_fn(m.f, method="structured_derivatives", vmap_axes=m.vmap_axes, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fallback warnings are tested below
        return kernel_fn(m.x1, m.x2, m.params)


def test_grid_is_large():
    assert len(MODELS) >= 150
    assert len({m.name for m in MODELS}) == len(MODELS)


@pytest.mark.parametrize("m", MODELS, ids=[m.name for m in MODELS])
def test_structured_matches_oracle(m):
    got = _sd(m, trace_axes=())
    if m.reverse:
        want = oracle_ntk(m.f, m.x1, m.x2, m.params, trace_axes=())
    else:  # the oracle's reverse mode cannot run: the same dense contraction, forward mode
        j1, j2 = (jax.jacfwd(m.f)(m.params, x) for x in (m.x1, m.x2))
        want = sum(
            jnp.einsum("ao...,bp...->abop", a, b)
            for a, b in zip(jax.tree.leaves(j1), jax.tree.leaves(j2))
        )
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert rel_error(got, want) <= m.tol


def _model(name):
    return next(m for m in MODELS if m.name == name)


@pytest.mark.parametrize("name", ["cumsum-of-param"])
def test_fallback_warns_once_per_primitive_and_stays_exact(name, monkeypatch):
    monkeypatch.setattr(_warnings, "_WARNED", set())
    m = _model(name)
    primitive = {"cumsum-of-param": "cumsum"}[name]
    kernel_fn = ntk_zoo.ntk_fn(m.f, method="structured_derivatives", vmap_axes=0)
    with pytest.warns(UserWarning, match=f"no structure rule for the primitive `{primitive}`"):
        got = kernel_fn(m.x1, m.x2, m.params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call is silent
        again = ntk_zoo.ntk_fn(m.f, method="structured_derivatives", vmap_axes=0)(
            m.x2, m.x1, m.params
        )
    assert rel_error(got, oracle_ntk(m.f, m.x1, m.x2, m.params)) <= EXACT
    assert rel_error(again, oracle_ntk(m.f, m.x2, m.x1, m.params)) <= EXACT


def test_untransposable_program_falls_back_to_forward_mode_exactly(monkeypatch):
    monkeypatch.setattr(_warnings, "_WARNED", set())
    m = _model("while-loop-dynamic")
    kernel_fn = ntk_zoo.ntk_fn(m.f, method="structured_derivatives", vmap_axes=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = kernel_fn(m.x1, m.x2, m.params)
    messages = [str(w.message) for w in caught]
    assert any("forward-mode Jacobian contraction" in msg for msg in messages), messages
    # Reverse mode cannot differentiate this loop at all (so neither can the oracle): compare
    # with forward-mode Jacobians, averaged over the logits like trace_axes=(-1,).
    j1, j2 = (jax.jacfwd(m.f)(m.params, x)["w"] for x in (m.x1, m.x2))
    want = jnp.einsum("aoij,boij->ab", j1, j2) / j1.shape[1]
    assert rel_error(got, want) <= EXACT
