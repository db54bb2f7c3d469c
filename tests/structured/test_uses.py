"""How structured derivatives contract the uses of a param leaf: one einsum per pair of uses
through their structure (``uses="structured"``), each use's Jacobian factor formed per example
and summed before one contraction (``"jacobian"``), or the cheaper mix per leaf (``"auto"``).
Both forced modes equal the float64 oracle on every case; on the whole grid every leaf is
also contracted the way ``auto`` does not (test_grid checks auto's way), so both paths of every
rule are exact. ``auto``'s choice follows the roofline cost, and the cost estimate of
``method="auto"`` follows that choice."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntk_zoo
from ntk_zoo.structured import _derivatives
from ntk_zoo.structured._derivatives import _forced_uses
from tests.cases import CASE_IDS, CASES
from tests.oracle import oracle_ntk, rel_error
from tests.structured.grid import MODELS

EXACT = 1e-10
FORCED = ("structured", "jacobian")  # auto is what every other SD test runs


def _sd(f, x1, x2, params, mode, **kw):
    with _forced_uses(mode), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fallbacks warn; tested in test_grid
        kernel_fn = ntk_zoo.ntk_fn(f, method="structured_derivatives", **kw)
        return kernel_fn(x1, x2, params)


@pytest.mark.parametrize("mode", FORCED)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_cases_exact_in_each_mode(case, mode):
    kw = dict(vmap_axes=case.vmap_axes, trace_axes=case.trace_axes, sum_params=False)
    with _forced_uses(mode):
        kernel_fn = ntk_zoo.ntk_fn(case.f, method="structured_derivatives", **kw)
        got = kernel_fn(case.x1, case.x2, case.params, **case.kwargs(False))
    want = oracle_ntk(
        case.f,
        case.x1,
        case.x2,
        case.params,
        trace_axes=case.trace_axes,
        sum_params=False,
        **case.kwargs(False),
    )
    assert rel_error(got, want) <= EXACT
    if mode == "jacobian":  # x2=None: one dense factor serves both sides
        with _forced_uses(mode):
            kernel_fn = ntk_zoo.ntk_fn(case.f, method="structured_derivatives", **kw)
            got = kernel_fn(case.x1, None, case.params, **case.kwargs(True))
        want = oracle_ntk(
            case.f,
            case.x1,
            None,
            case.params,
            trace_axes=case.trace_axes,
            sum_params=False,
            **case.kwargs(True),
        )
        assert rel_error(got, want) <= EXACT


def _grid_oracle(m):
    if m.reverse:
        return oracle_ntk(m.f, m.x1, m.x2, m.params, trace_axes=())  # cached per model
    j1, j2 = (jax.jacfwd(m.f)(m.params, x) for x in (m.x1, m.x2))
    return sum(
        jnp.einsum("ao...,bp...->abop", a, b)
        for a, b in zip(jax.tree.leaves(j1), jax.tree.leaves(j2))
    )


@pytest.fixture
def flipped(monkeypatch):
    """Every leaf contracted the other way than ``auto`` contracts it: summed densely where
    auto keeps structure, through its structure where auto sums (test_grid runs auto's way)."""
    choose = _derivatives._choose_dense

    def flip(s, mode):
        dense, _ = choose(s, "auto")
        full, specs = choose(s, "jacobian")
        return choose(s, "structured") if dense == full else (full, specs)

    monkeypatch.setattr(_derivatives, "_choose_dense", flip)


@pytest.mark.parametrize("m", MODELS, ids=[m.name for m in MODELS])
def test_grid_exact_the_other_way(m, flipped):
    got = _sd(m.f, m.x1, m.x2, m.params, "auto", vmap_axes=m.vmap_axes, trace_axes=())
    assert rel_error(got, _grid_oracle(m)) <= m.tol


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="`uses` must be one of"):
        with _forced_uses("dense"):
            pass


def _choices(monkeypatch) -> list:
    """Records, per contracted leaf, (leaf shape, number of uses, uses summed densely)."""
    seen = []
    choose = _derivatives._choose_dense

    def spy(s, mode):
        dense, specs = choose(s, mode)
        seen.append((s.leaf.shape, len(s.leaf.uses), tuple(dense)))
        return dense, specs

    monkeypatch.setattr(_derivatives, "_choose_dense", spy)
    return seen


def _tied(k):
    """A 3x3 matrix used ``k`` times (``h ← tanh(h w)``): small factors, many uses."""

    def f(p, x):
        h = x
        for _ in range(k):
            h = jnp.tanh(h @ p["w"])
        return h

    params = {"w": np.random.default_rng(0).standard_normal((3, 3)) / 2}
    x1 = np.random.default_rng(1).standard_normal((2, 3))
    x2 = np.random.default_rng(2).standard_normal((3, 3))
    return jax.vmap(f, in_axes=(None, 0)), params, x1, x2


def test_auto_sums_the_uses_of_a_many_use_leaf(monkeypatch):
    f, params, x1, x2 = _tied(6)
    seen = _choices(monkeypatch)
    einsums = []

    def counting(*args, sides):
        einsums.append(sides)
        return _derivatives._einsum(*args, sides=sides)

    kernel_fn = ntk_zoo.ntk_fn(f, method="structured_derivatives", vmap_axes=0, trace_axes=())
    problem = kernel_fn.problem(x1, x2, params)
    (leaf,) = _derivatives.structured_derivatives(problem, counting)
    assert seen == [((3, 3), 6, tuple(range(6)))]
    # 6 dense factors per side and one contraction, against 36 pair einsums
    assert len(einsums) == 2 * 6 + 1
    want = oracle_ntk(f, x1, x2, params, trace_axes=())
    assert rel_error(leaf["w"], want) <= EXACT


def test_auto_keeps_the_structure_of_a_wide_layer_with_many_outputs(monkeypatch):
    # y = x w with w 256x256 and 64 logits: J per example is 64x65536 values, the structured
    # contraction (x1·x2)(g1·g2) is tiny.
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((256, 256)) / 16, "r": rng.standard_normal((256, 64))}
    f = lambda p, x: jnp.tanh(x @ p["w"]) @ p["r"]
    x = rng.standard_normal((2, 256))
    seen = _choices(monkeypatch)
    kernel_fn = ntk_zoo.ntk_fn(f, method="structured_derivatives", vmap_axes=0, trace_axes=())
    jax.eval_shape(lambda x: kernel_fn(x, None, params), x)
    assert ((256, 256), 1, ()) in seen


def test_auto_cost_estimate_follows_the_choice():
    f, params, x1, x2 = _tied(6)
    kernel_fn = ntk_zoo.ntk_fn(f, method="structured_derivatives", vmap_axes=0, trace_axes=())
    costs = {}
    for mode in ("auto", *FORCED):
        with _forced_uses(mode):
            costs[mode] = kernel_fn.choose(x1, x2, params)[1]["structured_derivatives"]
    assert costs["auto"] == costs["jacobian"] < costs["structured"]
