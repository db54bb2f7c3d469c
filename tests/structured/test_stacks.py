"""A layer stack's parts merged into one leaf (``StructuredOptions(stacks="merged")``,
``structured/_stacks.py``): exact against the float64 oracle on every scanned pattern of
``test_control_flow``, every way of contracting the uses, shared Grams that keep the layer axis,
per-layer scales, a transformer block; which parts merge and which stay parts; and that the
merged program has one set of contraction products for the whole stack, not one per layer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import ntk_zoo
from ntk_zoo.structured import _derivatives
from tests.oracle import oracle_ntk, rel_error
from tests.structured.test_control_flow import (
    PARAMS,
    X1,
    X2,
    L,
    _batched,
    scan_both,
    scan_length_one,
    scan_nested,
    scan_remat_named,
    scan_reverse_carries,
    scan_stacked,
)

EXACT = 1e-10
MERGED = ntk_zoo.StructuredOptions(stacks="merged")
SCANNED = [scan_stacked, scan_both, scan_reverse_carries, scan_nested, scan_remat_named]


def _kernel(f, x2, params=PARAMS, x1=X1, options=MERGED, **kw):
    kw = {"vmap_axes": 0, "trace_axes": (), **kw}
    fn = ntk_zoo.ntk_fn(f, method="structured_derivatives", structured=options, **kw)
    return fn(x1, x2, params)


def _merged_leaves(monkeypatch, f, x2, params=PARAMS, x1=X1, options=MERGED, **kw) -> list:
    """The leaves the structured program contracts (after merging), per side-1 record."""
    seen = []
    merge = _derivatives.merge_stacks

    def spy(*args):
        out = merge(*args)
        seen.append(out[0])
        return out

    monkeypatch.setattr(_derivatives, "merge_stacks", spy)
    _kernel(f, x2, params, x1, options, **kw)
    return seen[-1] if seen else None


@pytest.mark.parametrize("g", SCANNED, ids=[g.__name__ for g in SCANNED])
def test_merged_stacks_are_exact(g, monkeypatch):
    f = _batched(g)
    got = _kernel(f, X2, sum_params=False)
    assert rel_error(got, oracle_ntk(f, X1, X2, PARAMS, trace_axes=(), sum_params=False)) <= EXACT
    got = jax.jit(lambda x: _kernel(f, None, x1=x, trace_axes=(-1,)))(X1)
    assert rel_error(got, oracle_ntk(f, X1, None, PARAMS, trace_axes=(-1,))) <= EXACT
    # the stacked W and b were merged (each one leaf of shape (L, ...)), not left as parts; in
    # the nested scan every layer's slice is read once per outer step (overlapping slices: no
    # parts, ``_roots``), so there is nothing to merge
    leaves = _merged_leaves(monkeypatch, f, X2)
    stacked = {leaf.shape for leaf in leaves if leaf.stacked}
    assert stacked == (set() if g is scan_nested else {PARAMS["W"].shape, PARAMS["b"].shape})


@pytest.mark.parametrize("uses", ["structured", "jacobian", "auto"])
@pytest.mark.parametrize("grams", ["always", "never"])
def test_every_way_of_contracting_a_merged_stack_is_exact(uses, grams):
    f = _batched(scan_both)
    options = ntk_zoo.StructuredOptions(uses=uses, grams=grams, stacks="merged")
    for x2 in (X2, None):
        got = _kernel(f, x2, options=options, sum_params=False)
        want = oracle_ntk(f, X1, x2, PARAMS, trace_axes=(), sum_params=False)
        assert rel_error(got, want) <= EXACT


def _scaled_stack(p, x):  # each layer's weight scaled in the body (NTK parameterisation)
    body = lambda h, wb: (jnp.tanh(h @ (wb[0] / np.sqrt(3.0)) + 0.5 * wb[1]), None)
    h, _ = lax.scan(body, x.mean(-2), (p["W"], p["b"]))
    return h @ p["r"]


def test_a_merged_stack_of_scaled_layers_is_exact(monkeypatch):
    f = _batched(_scaled_stack)
    for x2 in (X2, None):
        got = _kernel(f, x2, sum_params=False)
        want = oracle_ntk(f, X1, x2, PARAMS, trace_axes=(), sum_params=False)
        assert rel_error(got, want) <= EXACT
    leaves = _merged_leaves(monkeypatch, f, X2)
    assert any(leaf.stacked and leaf.scaled for leaf in leaves)


def test_a_cotangent_gram_of_a_merged_stack_keeps_the_layer_axis(monkeypatch):
    # a merged use's cotangent Gram sums the features and keeps the layers, once for both sides
    # (``_choice.shared_grams``): G[l] = Σ (∂f/∂y_l)(x1) (∂f/∂y_l)(x2); summing the layers too
    # would add the cross-layer products Σ_{l≠l'}, which are not in the kernel
    from ntk_zoo.structured import _choice

    f = _batched(scan_stacked)
    made = []
    shared = _choice.shared_grams

    def spy(*args):
        out = shared(*args)
        made.extend(out)
        return out

    monkeypatch.setattr(_derivatives._choice, "shared_grams", spy)
    options = ntk_zoo.StructuredOptions(grams="always", stacks="merged")
    for x2 in (X2, None):
        got = _kernel(f, x2, options=options, sum_params=False)
        want = oracle_ntk(f, X1, x2, PARAMS, trace_axes=(), sum_params=False)
        assert rel_error(got, want) <= EXACT
    assert any(g.kept == {0} for g in made)


def _block(h, p):  # a pre-LN single-head transformer block on (tokens, width)
    def norm(a):
        mu = a.mean(-1, keepdims=True)
        return (a - mu) * lax.rsqrt(((a - mu) ** 2).mean(-1, keepdims=True) + 1e-6)

    a = norm(h) * p["g"][None, :]
    q, k, v = a @ p["q"], a @ p["k"], a @ p["v"]
    h = h + jax.nn.softmax(q @ k.T / np.sqrt(h.shape[-1])) @ v @ p["o"]
    return h + jnp.tanh(norm(h) @ p["m1"]) @ p["m2"]


def _transformer(p, x):
    h, _ = lax.scan(lambda h, q: (_block(h, q), None), x, p["blocks"])
    return h.mean(0) @ p["head"]


def test_a_merged_transformer_stack_is_exact_and_has_fewer_products():
    rng = np.random.default_rng(1)
    n = lambda *s: rng.standard_normal(s) / np.sqrt(s[-2] if len(s) > 2 else 1)
    blocks = {k: n(L, 4, 4) for k in ("q", "k", "v", "o")}
    blocks |= {"g": 1 + 0.1 * rng.standard_normal((L, 4)), "m1": n(L, 4, 6), "m2": n(L, 6, 4)}
    params = {"blocks": blocks, "head": rng.standard_normal((4, 2))}
    x1, x2 = rng.standard_normal((2, 3, 4)), rng.standard_normal((3, 3, 4))
    f = _batched(_transformer)
    for x2_ in (x2, None):
        got = _kernel(f, x2_, params, x1, sum_params=False)
        want = oracle_ntk(f, x1, x2_, params, trace_axes=(), sum_params=False)
        assert rel_error(got, want) <= EXACT

    def products(stacks: str) -> int:
        options = ntk_zoo.StructuredOptions(stacks=stacks)
        fn = ntk_zoo.ntk_fn(f, method="structured_derivatives", structured=options, vmap_axes=0)
        jaxpr = jax.make_jaxpr(fn)(x1, None, params)
        return sum(e.primitive.name == "dot_general" for e in jaxpr.jaxpr.eqns)

    # the forward and transposed passes are per layer either way; the contraction's products
    # run once for the stack instead of once per layer: at least one per layer fewer for each
    # of the six matrices
    merged, parts = products("merged"), products("parts")
    assert merged <= parts - (L - 1) * 6


def _conv_stack(p, x):  # stacked convolution kernels: their uses have a rule's factor cost
    def body(h, w):
        dn = ("NHWC", "HWIO", "NHWC")
        y = lax.conv_general_dilated(h[None], w, (1, 1), "SAME", dimension_numbers=dn)[0]
        return jnp.tanh(y), None

    h, _ = lax.scan(body, x, p["k"])
    return h.mean((0, 1)) @ p["r"]


def test_parts_that_cannot_merge_stay_parts_and_stay_exact(monkeypatch):
    rng = np.random.default_rng(2)
    params = {"k": rng.standard_normal((2, 3, 3, 2, 2)) / 3, "r": rng.standard_normal((2, 2))}
    x1, x2 = rng.standard_normal((2, 4, 4, 2)), rng.standard_normal((3, 4, 4, 2))
    f = _batched(_conv_stack)
    got = _kernel(f, x2, params, x1, sum_params=False)
    want = oracle_ntk(f, x1, x2, params, trace_axes=(), sum_params=False)
    assert rel_error(got, want) <= EXACT
    leaves = _merged_leaves(monkeypatch, f, x2, params, x1)
    kernel_parts = [leaf for leaf in leaves if leaf.owner == 0]
    assert len(kernel_parts) == 2 and not any(leaf.stacked for leaf in kernel_parts)


def test_a_length_one_stack_is_one_part(monkeypatch):
    f = _batched(scan_length_one)
    got = _kernel(f, X2, sum_params=False)
    assert rel_error(got, oracle_ntk(f, X1, X2, PARAMS, trace_axes=(), sum_params=False)) <= EXACT
    assert not any(leaf.stacked for leaf in _merged_leaves(monkeypatch, f, X2))


def test_the_default_contracts_a_stack_part_by_part(monkeypatch):
    assert _merged_leaves(monkeypatch, _batched(scan_stacked), X2, options=None) is None
