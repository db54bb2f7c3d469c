"""How structured derivatives contract the uses of a param leaf: one einsum per pair of uses
through their structure (``uses="structured"``), each use's Jacobian factor formed per example
and summed before one contraction (``"jacobian"``), or the cheaper mix per leaf (``"auto"``);
and whether uses with the same ``∂f/∂y`` (a dense layer's ``W`` and ``b``) start from one shared
cotangent Gram (``grams``: ``always``, ``never``, ``auto``); both are fields of
``ntk_zoo.StructuredOptions``.
Every forced combination equals the float64 oracle on every case (``x2`` given and ``None``,
``vmap_axes`` given and ``None``, per leaf and summed); on the whole grid every leaf is
also contracted the way ``auto`` does not (test_grid checks auto's way), with Grams forced, so
every path of every rule is exact. ``auto``'s choices follow the roofline cost, and the cost
estimate of ``method="auto"`` follows them."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntk_zoo
from ntk_zoo.structured import _choice, _contractor, _derivatives, _factors
from tests.cases import CASE_IDS, CASES
from tests.oracle import oracle_ntk, rel_error
from tests.structured.grid import MODELS

EXACT = 1e-10
FORCED = ("structured", "jacobian")  # auto is what every other SD test runs
# (uses, grams): structure with and without shared Grams, and the Jacobian product (no Grams)
PATHS = (("structured", "always"), ("structured", "never"), ("jacobian", "always"))


def _sd(f, x1, x2, params, mode, grams="auto", call_kw=None, **kw):
    options = ntk_zoo.StructuredOptions(uses=mode, grams=grams)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fallbacks warn; tested in test_grid
        kernel_fn = ntk_zoo.ntk_fn(f, method="structured_derivatives", structured=options, **kw)
        return kernel_fn(x1, x2, params, **(call_kw or {}))


@pytest.mark.parametrize("path", PATHS, ids=["/".join(p) for p in PATHS])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_cases_exact_on_each_path(case, path):
    # (x2 given?, vmap_axes, sum_params): the case's vmap_axes per leaf; x2=None without vmap
    # per leaf (one factor serves both sides); x2 given without vmap, summed over leaves
    variants = ((False, case.vmap_axes, False), (True, None, False), (False, None, True))
    if path == ("structured", "never"):  # the layouts of the other variants: on the other paths
        variants = variants[:1]
    for same, vmap_axes, sum_params in variants:
        x2 = None if same else case.x2
        kw = dict(vmap_axes=vmap_axes, trace_axes=case.trace_axes, sum_params=sum_params)
        got = _sd(case.f, case.x1, x2, case.params, *path, case.kwargs(same), **kw)
        want = oracle_ntk(
            case.f,
            case.x1,
            x2,
            case.params,
            trace_axes=case.trace_axes,
            sum_params=sum_params,
            **case.kwargs(same),
        )
        assert rel_error(got, want) <= EXACT, (same, vmap_axes, sum_params)


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
    choose = _choice.choose_dense

    def flip(s, mode):
        full = choose(s, "jacobian")
        return choose(s, "structured") if choose(s, "auto").uses == full.uses else full

    monkeypatch.setattr(_choice, "choose_dense", flip)


@pytest.mark.parametrize("m", MODELS, ids=[m.name for m in MODELS])
def test_grid_exact_the_other_way(m, flipped):
    got = _sd(m.f, m.x1, m.x2, m.params, "auto", "always", vmap_axes=m.vmap_axes, trace_axes=())
    assert rel_error(got, _grid_oracle(m)) <= m.tol


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="`uses` must be one of"):
        ntk_zoo.StructuredOptions(uses="dense")
    with pytest.raises(ValueError, match="`grams` must be one of"):
        ntk_zoo.StructuredOptions(grams="sometimes")


def _grams(monkeypatch) -> list:
    """Records, per output leaf, the Grams shared: per Gram, the (leaf, use) pairs that use it."""
    seen = []
    shared = _choice.shared_grams

    def spy(*args):
        grams = shared(*args)
        seen.append(sorted(gram.users for gram in grams))
        return grams

    monkeypatch.setattr(_choice, "shared_grams", spy)
    return seen


def _case(name):
    return next(c for c in CASES if c.name == name)


def test_a_dense_layers_weight_and_bias_share_one_gram(monkeypatch):
    # mlp: three layers x @ w + b; per example one token, so W's pair einsum is the Gram of
    # ∂f/∂y times the inputs' Gram and b's is that Gram itself: one Gram per layer
    case = _case("mlp")
    seen = _grams(monkeypatch)
    kw = dict(trace_axes=case.trace_axes, sum_params=False)
    got = _sd(case.f, case.x1, case.x2, case.params, "structured", vmap_axes=0, **kw)
    leaves = jax.tree_util.tree_flatten_with_path(case.params)[0]
    names = [jax.tree_util.keystr(path) for path, _ in leaves]
    groups = [sorted(names[i][2:-2] for i, _ in group) for group in seen[0]]
    assert sorted(groups) == [["b0", "w0"], ["b1", "w1"], ["b2", "w2"]]
    want = oracle_ntk(case.f, case.x1, case.x2, case.params, **kw)
    assert rel_error(got, want) <= EXACT


def _gram_users(seen, params) -> list[list[str]]:
    """The Grams of the first output leaf, each as the sorted paths of the leaves that use it."""
    paths = [jax.tree_util.keystr(p, simple=True, separator="/") for p, _ in _leaves(params)]
    return sorted(sorted(paths[i] for i, _ in users) for users in seen[0])


def _leaves(params):
    return jax.tree_util.tree_flatten_with_path(params)[0]


def _dense_reshaped(p, x):
    """Two dense layers adding their bias as Flax's ``Dense`` and NNX's ``Linear`` do: reshaped
    to ``(1, ..., 1, W)``, a view of the leaf; under ``vmap`` its use's ``y`` is ``(1, W)``."""
    bias = lambda y, b: y + jnp.reshape(b, (1,) * (y.ndim - 1) + (-1,))
    return bias(jnp.tanh(bias(x @ p["w0"], p["b0"])) @ p["w1"], p["b1"])


def test_a_bias_reshaped_to_one_row_shares_the_gram_of_its_weight(monkeypatch):
    # the bias's use pairs the size-1 row axis too (its view is (1, W)); the weight's keeps it
    # as the inputs' row: size 1, it neither blocks the Gram nor stays in it
    case = _case("mlp")
    params = {k: case.params[k] for k in ("w0", "b0", "w1", "b1")}
    seen = _grams(monkeypatch)
    kw = dict(trace_axes=(), sum_params=False)
    got = _sd(_dense_reshaped, case.x1, case.x2, params, "structured", vmap_axes=0, **kw)
    assert _gram_users(seen, params) == [["b0", "w0"], ["b1", "w1"]]
    want = oracle_ntk(_dense_reshaped, case.x1, case.x2, params, **kw)
    assert rel_error(got, want) <= EXACT


def test_a_bias_broadcast_over_the_batch_shares_the_gram_of_its_weight(monkeypatch):
    # without vmap the bias (1, W) is stretched over the batch by the add: its ∂f/∂y is the
    # layer's summed over the examples, which it sums from G like a broadcast axis (auto
    # declines this G on cost at these sizes: forced, to check the grouping and its numbers)
    case = _case("mlp")
    seen = _grams(monkeypatch)
    kw = dict(trace_axes=case.trace_axes, sum_params=False)
    got = _sd(case.f, case.x1, case.x2, case.params, "structured", "always", vmap_axes=None, **kw)
    assert _gram_users(seen, case.params) == [["b0", "w0"], ["b1", "w1"], ["b2", "w2"]]
    want = oracle_ntk(case.f, case.x1, case.x2, case.params, **kw)
    assert rel_error(got, want) <= EXACT


def _flax_mlps():
    """The same two-layer tanh MLP as Flax linen ``Dense`` and NNX ``Linear`` layers."""
    from flax import nnx

    from tests.adapters.models import NNXMLP, LinenMLP

    x = jnp.zeros((1, 4), jnp.float64)
    return {
        "linen": ntk_zoo.from_linen(LinenMLP(), LinenMLP().init(jax.random.key(0), x)),
        "nnx": ntk_zoo.from_nnx(NNXMLP(nnx.Rngs(0))),
    }


def _layer_and_kind(path: str) -> tuple[str, str]:
    parts = path.split("/")
    k = next(i for i, part in enumerate(parts) if part in ("bias", "kernel"))
    return "/".join(parts[:k]), parts[k]


@pytest.mark.parametrize("framework", ["linen", "nnx"])
def test_flax_dense_layers_share_one_gram_per_layer(monkeypatch, framework):
    pure = _flax_mlps()[framework]
    case = _case("mlp")
    seen = _grams(monkeypatch)
    kw = dict(trace_axes=(), sum_params=False)
    got = _sd(pure.apply, case.x1, case.x2, pure.params, "structured", vmap_axes=0, **kw)
    # one Gram per layer, used by the layer's bias and kernel (NNX paths end in /value)
    layers = [[_layer_and_kind(p) for p in users] for users in _gram_users(seen, pure.params)]
    assert len(layers) == 2
    for (layer_b, b), (layer_k, k) in layers:
        assert (layer_b, b, k) == (layer_k, "bias", "kernel")
    want = oracle_ntk(pure.apply, case.x1, case.x2, pure.params, **kw)
    assert rel_error(got, want) <= EXACT


def test_uses_of_one_sum_share_their_cotangent():
    # x_a @ wa + x_b.T @ wb: both products feed one add, so the two weights form one group
    case = _case("pytree_in")
    fn = lambda p: case.f(p, case.x1)
    _, statics = _factors.record(fn, case.params)
    groups = {k: leaf.uses[0].group for k, leaf in zip(sorted(case.params), statics)}
    assert groups["wa"] == groups["wb"] >= 0
    assert groups["head"] != groups["wa"]


def test_auto_cost_estimate_counts_the_shared_grams():
    case = _case("mlp")
    kernel_fn = ntk_zoo.ntk_fn(case.f, method="structured_derivatives", vmap_axes=0)
    costs = {}
    for grams in ("auto", "never"):
        options = ntk_zoo.StructuredOptions(uses="structured", grams=grams)
        forced = kernel_fn.replace(structured=options)
        costs[grams] = forced.choose(case.x1, case.x2, case.params)[1]["structured_derivatives"]
    assert costs["auto"] < costs["never"]


def _choices(monkeypatch) -> list:
    """Records, per contracted leaf, (leaf shape, number of uses, uses summed densely)."""
    seen = []
    choose = _choice.choose_dense

    def spy(s, mode):
        dense = choose(s, mode)
        seen.append((s.leaf.shape, len(s.leaf.uses), tuple(dense.uses)))
        return dense

    monkeypatch.setattr(_choice, "choose_dense", spy)
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
    calls = []

    class Counting(_contractor.RunningContractor):
        def contract(self, einsum):
            calls.append("contract")
            return super().contract(einsum)

        def factor(self, einsum, formed, cost=None, d=None):
            calls.append("factor")
            return super().factor(einsum, formed, cost, d)

    kernel_fn = ntk_zoo.ntk_fn(f, method="structured_derivatives", vmap_axes=0, trace_axes=())
    problem = kernel_fn.problem(x1, x2, params)
    (leaf,) = _derivatives.structured_derivatives(problem, Counting())
    assert seen == [((3, 3), 6, tuple(range(6)))]
    # 6 dense factors per side and one contraction, against 36 pair einsums
    assert calls == ["factor"] * (2 * 6) + ["contract"]
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
        forced = kernel_fn.replace(structured=ntk_zoo.StructuredOptions(uses=mode))
        costs[mode] = forced.choose(x1, x2, params)[1]["structured_derivatives"]
    assert costs["auto"] == costs["jacobian"] < costs["structured"]
