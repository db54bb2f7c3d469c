"""Flax linen, Flax NNX and Haiku adapters against hand-written pure functions."""

import flax.linen as nn
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import ntk_zoo
from tests.adapters.models import NNXMLP, LinenMLP
from tests.cases import add_bias
from tests.oracle import oracle_ntk, rel_error

EXACT = 1e-10
METHODS = ["jacobian_contraction", "ntk_vector_products", "structured_derivatives", "auto"]
rng = np.random.default_rng(0)
W = {
    "w0": rng.standard_normal((4, 6)),
    "b0": rng.standard_normal(6) * 0.1,
    "w1": rng.standard_normal((6, 3)),
    "b1": rng.standard_normal(3) * 0.1,
}
X1, X2 = rng.standard_normal((3, 4)), rng.standard_normal((2, 4))


def plain_mlp(p, x):
    return add_bias(jnp.tanh(add_bias(x @ p["w0"], p["b0"])) @ p["w1"], p["b1"])


def nnx_mlp():
    model = NNXMLP(nnx.Rngs(0))
    for layer, w, b in ((model.l0, "w0", "b0"), (model.l1, "w1", "b1")):
        layer.kernel.set_value(jnp.asarray(W[w]))
        layer.bias.set_value(jnp.asarray(W[b]))
    return model


def haiku_mlp(x):
    return hk.Linear(3, name="l1")(jnp.tanh(hk.Linear(6, name="l0")(x)))


def adapted_mlps():
    linen = ntk_zoo.from_linen(
        LinenMLP(),
        {
            "params": {
                "Dense_0": {"kernel": W["w0"], "bias": W["b0"]},
                "Dense_1": {"kernel": W["w1"], "bias": W["b1"]},
            }
        },
    )
    model = nnx_mlp()
    net = hk.without_apply_rng(hk.transform(haiku_mlp))
    haiku = ntk_zoo.from_haiku(
        net, {"l0": {"w": W["w0"], "b": W["b0"]}, "l1": {"w": W["w1"], "b": W["b1"]}}
    )
    return {"linen": linen, "nnx": ntk_zoo.from_nnx(model), "haiku": haiku}


@pytest.mark.parametrize("trace_axes", [(-1,), ()])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("framework", ["linen", "nnx", "haiku"])
def test_same_mlp_same_kernel_in_every_framework(framework, method, trace_axes):
    pure = adapted_mlps()[framework]
    got = ntk_zoo.ntk_fn(pure, method=method, trace_axes=trace_axes)(X1, X2)
    want = oracle_ntk(plain_mlp, X1, X2, W, trace_axes=trace_axes)
    assert rel_error(got, want) <= EXACT


# --- BatchNorm and dropout ----------------------------------------------------------------------

EPS, MOMENTUM = 1e-5, 0.9
BN = {
    "w0": rng.standard_normal((4, 5)),
    "b0": rng.standard_normal(5) * 0.1,
    "scale": 1 + 0.1 * rng.standard_normal(5),
    "bias": 0.1 * rng.standard_normal(5),
    "w1": rng.standard_normal((5, 2)),
    "b1": rng.standard_normal(2) * 0.1,
}
RUNNING = {"mean": 0.1 * rng.standard_normal(5), "var": 1 + 0.1 * rng.random(5)}
CAL = rng.standard_normal((7, 4))


def bn_reference(p, x, mean=None, var=None):
    h = add_bias(x @ p["w0"], p["b0"])
    if mean is None:  # statistics of this batch
        mean, var = h.mean(0), h.var(0)
    h = add_bias((h - mean[None]) / jnp.sqrt(var + EPS)[None] * p["scale"][None], p["bias"])
    return add_bias(jnp.tanh(h) @ p["w1"], p["b1"])


def calibration_stats():
    h = CAL @ BN["w0"] + BN["b0"]
    return h.mean(0), h.var(0)


class LinenBN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        h = nn.Dense(5, param_dtype=jnp.float64)(x)
        h = nn.BatchNorm(
            use_running_average=not train, momentum=MOMENTUM, epsilon=EPS, param_dtype=jnp.float64
        )(h)
        return nn.Dense(2, param_dtype=jnp.float64)(jnp.tanh(h))


def linen_bn(batch_norm, **kw):
    variables = {
        "params": {
            "Dense_0": {"kernel": BN["w0"], "bias": BN["b0"]},
            "BatchNorm_0": {"scale": BN["scale"], "bias": BN["bias"]},
            "Dense_1": {"kernel": BN["w1"], "bias": BN["b1"]},
        },
        "batch_stats": {"BatchNorm_0": RUNNING},
    }
    return ntk_zoo.from_linen(
        LinenBN(), variables, batch_norm=batch_norm, train=False, train_kwargs={"train": True}, **kw
    )


class NNXBN(nnx.Module):
    def __init__(self):
        r = nnx.Rngs(0)
        self.l0 = nnx.Linear(4, 5, param_dtype=jnp.float64, rngs=r)
        self.bn = nnx.BatchNorm(5, momentum=MOMENTUM, epsilon=EPS, param_dtype=jnp.float64, rngs=r)
        self.l1 = nnx.Linear(5, 2, param_dtype=jnp.float64, rngs=r)
        for var, value in (
            (self.l0.kernel, BN["w0"]),
            (self.l0.bias, BN["b0"]),
            (self.bn.scale, BN["scale"]),
            (self.bn.bias, BN["bias"]),
            (self.bn.mean, RUNNING["mean"]),
            (self.bn.var, RUNNING["var"]),
            (self.l1.kernel, BN["w1"]),
            (self.l1.bias, BN["b1"]),
        ):
            var.set_value(jnp.asarray(value))

    def __call__(self, x):
        return self.l1(jnp.tanh(self.bn(self.l0(x))))


def nnx_bn(batch_norm, **kw):
    return ntk_zoo.from_nnx(NNXBN(), batch_norm=batch_norm, **kw)


BUILDERS = {"linen": linen_bn, "nnx": nnx_bn}


@pytest.mark.parametrize("framework", ["linen", "nnx"])
@pytest.mark.parametrize("policy", ["running", "batch"])
def test_independent_batch_norm_policies(framework, policy):
    pure = BUILDERS[framework](policy, calibration=CAL if policy == "batch" else None)
    mean, var = (RUNNING["mean"], RUNNING["var"]) if policy == "running" else calibration_stats()
    want = oracle_ntk(lambda p, x: bn_reference(p, x, mean, var), X1, X2, BN, trace_axes=())
    for method in METHODS:
        got = ntk_zoo.ntk_fn(pure, method=method, trace_axes=())(X1, X2)
        assert rel_error(got, want) <= EXACT
        # vmap_axes=0 (the PureFn's default) and whole-batch Jacobians agree.
        full = ntk_zoo.ntk_fn(pure._replace(vmap_axes=None), method=method, trace_axes=())
        assert rel_error(full(X1, X2), got) <= EXACT
    assert pure.vmap_axes == 0 and not pure.batch_coupled


@pytest.mark.parametrize("framework", ["linen", "nnx"])
def test_coupled_batch_norm_matches_full_batch_oracle(framework):
    pure = BUILDERS[framework]("coupled")
    assert pure.vmap_axes is None and pure.batch_coupled
    want = oracle_ntk(bn_reference, X1, None, BN, trace_axes=())
    for method in METHODS:
        got = ntk_zoo.ntk_fn(pure, method=method, trace_axes=())(X1)
        assert rel_error(got, want) <= EXACT


def test_batch_stats_never_differentiated():
    pure = linen_bn("running")
    assert "batch_stats" not in str(jax.tree_util.tree_structure(pure.params))
    with pytest.raises(ValueError, match="never differentiated"):
        ntk_zoo.from_linen(
            LinenBN(), {"params": {}, "batch_stats": {}}, collections=("params", "batch_stats")
        )


class LinenDropout(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        h = jnp.tanh(nn.Dense(8, param_dtype=jnp.float64)(x))
        h = nn.Dropout(0.5, deterministic=not train)(h)
        return nn.Dense(2, param_dtype=jnp.float64)(h), h


def test_linen_fixed_dropout_key_is_exact_and_consistent():
    x = jnp.asarray(X1)
    variables = LinenDropout().init(jax.random.key(0), x, train=False)
    pure = ntk_zoo.from_linen(
        LinenDropout(), variables, dropout=jax.random.key(1), output=0, train=True
    )
    got = ntk_zoo.ntk_fn(pure)(X1, X2)
    want = oracle_ntk(pure.apply, X1, X2, pure.params)
    assert rel_error(got, want) <= EXACT
    assert rel_error(ntk_zoo.ntk_fn(pure._replace(vmap_axes=None))(X1, X2), got) <= EXACT
    off = ntk_zoo.from_linen(LinenDropout(), variables, output=0, train=False)
    assert rel_error(ntk_zoo.ntk_fn(off)(X1, X2), got) > 1e-3  # the mask does act


# --- filters ------------------------------------------------------------------------------------


@pytest.mark.parametrize("framework", ["linen", "nnx", "haiku"])
def test_weights_only_filter_equals_sum_of_weight_leaves(framework):
    filters = {"linen": "kernel$", "nnx": "kernel$", "haiku": "/w$"}
    full = adapted_mlps()[framework]
    per_leaf = ntk_zoo.ntk_fn(full, sum_params=False)(X1, X2)
    paths = jax.tree_util.tree_flatten_with_path(per_leaf)[0]
    weights = [
        k
        for path, k in paths
        if any(jax.tree_util.keystr((key,)) in ("['kernel']", "['w']") for key in path)
    ]
    assert len(weights) == 2
    module = {"linen": ntk_zoo.from_linen, "nnx": ntk_zoo.from_nnx}
    if framework == "haiku":
        net = hk.without_apply_rng(hk.transform(haiku_mlp))
        params = {"l0": {"w": W["w0"], "b": W["b0"]}, "l1": {"w": W["w1"], "b": W["b1"]}}
        filtered = ntk_zoo.from_haiku(net, params, params_filter=filters[framework])
        predicate = ntk_zoo.from_haiku(net, params, params_filter=lambda m, n, v: n == "w")
        assert rel_error(ntk_zoo.ntk_fn(predicate)(X1, X2), sum(weights)) <= EXACT
    elif framework == "linen":
        filtered = module[framework](
            LinenMLP(),
            {
                "params": {
                    "Dense_0": {"kernel": W["w0"], "bias": W["b0"]},
                    "Dense_1": {"kernel": W["w1"], "bias": W["b1"]},
                }
            },
            params_filter=filters[framework],
        )
    else:
        filtered = ntk_zoo.from_nnx(nnx_mlp(), params_filter=filters[framework])
    assert len(jax.tree.leaves(filtered.params)) == 2
    assert rel_error(ntk_zoo.ntk_fn(filtered)(X1, X2), sum(weights)) <= EXACT


# --- errors -------------------------------------------------------------------------------------


def test_filter_selecting_nothing():
    with pytest.raises(ValueError, match="selects nothing"):
        ntk_zoo.from_linen(
            LinenMLP(), {"params": {"Dense_0": {"kernel": W["w0"]}}}, params_filter="no_such_layer"
        )
    with pytest.raises(ValueError, match="selects nothing"):
        ntk_zoo.from_nnx(NNXMLP(nnx.Rngs(0)), params_filter="no_such_layer")


def test_active_dropout_without_policy():
    variables = LinenDropout().init(jax.random.key(0), jnp.asarray(X1), train=False)
    pure = ntk_zoo.from_linen(LinenDropout(), variables, output=0, train=True)
    with pytest.raises(ValueError, match=r"needs an rng.*dropout="):
        ntk_zoo.ntk_fn(pure)(X1)


def test_output_selector_that_does_not_match():
    variables = LinenDropout().init(jax.random.key(0), jnp.asarray(X1), train=False)
    pure = ntk_zoo.from_linen(LinenDropout(), variables, output="logits", train=False)
    with pytest.raises(ValueError, match=r"output=.logits. does not match.*tuple of length 2"):
        ntk_zoo.ntk_fn(pure)(X1)


def test_coupled_batch_norm_with_vmap_axes_requested():
    with pytest.raises(ValueError, match=r"examples interact.*vmap_axes=None"):
        ntk_zoo.ntk_fn(linen_bn("coupled"), vmap_axes=0)


def test_running_policy_on_a_training_mode_module():
    variables = {"params": linen_bn("running").params, "batch_stats": {"BatchNorm_0": RUNNING}}
    pure = ntk_zoo.from_linen(LinenBN(), variables, train=True)
    with pytest.raises(ValueError, match="eval-mode argument"):
        ntk_zoo.ntk_fn(pure)(X1)


def test_unknown_batch_norm_policy_and_missing_calibration():
    with pytest.raises(ValueError, match="not a policy"):
        linen_bn("frozen")
    with pytest.raises(ValueError, match="needs `calibration`"):
        linen_bn("batch")


# --- Haiku BatchNorm, dropout keys, filters by type and method --------------------------------


def haiku_bn_fn(x, is_training):
    h = hk.BatchNorm(True, True, MOMENTUM, eps=EPS)(hk.Linear(5)(x), is_training)
    return hk.Linear(2)(jnp.tanh(h))


def haiku_bn(policy, **kw):
    params = {
        "linear": {"w": BN["w0"], "b": BN["b0"]},
        "batch_norm": {"scale": BN["scale"][None], "offset": BN["bias"][None]},
        "linear_1": {"w": BN["w1"], "b": BN["b1"]},
    }
    ema = lambda v: {"average": v[None], "hidden": v[None], "counter": jnp.asarray(5, jnp.int32)}
    state = {
        "batch_norm/~/mean_ema": ema(RUNNING["mean"]),
        "batch_norm/~/var_ema": ema(RUNNING["var"]),
    }
    return ntk_zoo.from_haiku(
        hk.without_apply_rng(hk.transform_with_state(haiku_bn_fn)),
        params,
        state,
        batch_norm=policy,
        train_kwargs={"is_training": True},
        is_training=False,
        **kw,
    )


@pytest.mark.parametrize("policy", ["running", "batch", "coupled"])
def test_haiku_batch_norm_policies(policy):
    pure = haiku_bn(policy, calibration=CAL if policy == "batch" else None)
    if policy == "coupled":
        want = oracle_ntk(bn_reference, X1, None, BN, trace_axes=())
        got = ntk_zoo.ntk_fn(pure, trace_axes=())(X1)
        assert pure.vmap_axes is None
    else:
        stats = (RUNNING["mean"], RUNNING["var"]) if policy == "running" else calibration_stats()
        want = oracle_ntk(lambda p, x: bn_reference(p, x, *stats), X1, X2, BN, trace_axes=())
        got = ntk_zoo.ntk_fn(pure, trace_axes=())(X1, X2)
    assert rel_error(got, want) <= EXACT


class NNXDropout(nnx.Module):
    def __init__(self):
        r = nnx.Rngs(0, dropout=1)
        self.l0 = nnx.Linear(4, 8, param_dtype=jnp.float64, rngs=r)
        self.drop = nnx.Dropout(0.5, rngs=r)
        self.l1 = nnx.Linear(8, 2, param_dtype=jnp.float64, rngs=r)

    def __call__(self, x):
        return self.l1(self.drop(jnp.tanh(self.l0(x))))


def haiku_dropout_fn(x):
    h = jnp.tanh(hk.Linear(8)(x))
    return hk.Linear(2)(hk.dropout(hk.next_rng_key(), 0.5, h))


def dropout_models(key):
    net = hk.transform(haiku_dropout_fn)
    params = jax.tree.map(
        lambda a: a.astype(jnp.float64), net.init(jax.random.key(0), jnp.asarray(X1))
    )
    return {
        "nnx": ntk_zoo.from_nnx(NNXDropout(), dropout=key),
        "haiku": ntk_zoo.from_haiku(net, params, dropout=key),
    }


@pytest.mark.parametrize("framework", ["nnx", "haiku"])
def test_fixed_dropout_key_is_exact_and_consistent(framework):
    pure = dropout_models(jax.random.key(3))[framework]
    got = ntk_zoo.ntk_fn(pure)(X1, X2)
    assert rel_error(got, oracle_ntk(pure.apply, X1, X2, pure.params)) <= EXACT
    assert rel_error(ntk_zoo.ntk_fn(pure._replace(vmap_axes=None))(X1, X2), got) <= EXACT
    other_key = dropout_models(jax.random.key(4))[framework]
    assert rel_error(ntk_zoo.ntk_fn(other_key)(X1, X2), got) > 1e-3  # the mask does act


def test_haiku_dropout_without_key():
    net = hk.transform(haiku_dropout_fn)
    pure = ntk_zoo.from_haiku(net, net.init(jax.random.key(0), jnp.asarray(X1)))
    with pytest.raises(ValueError, match=r"needs an rng.*dropout="):
        ntk_zoo.ntk_fn(pure)(X1)


def test_haiku_state_required():
    with pytest.raises(ValueError, match="needs its `state`"):
        ntk_zoo.from_haiku(hk.transform_with_state(haiku_bn_fn), {})


def test_nnx_filter_by_type_and_predicate_is_last_layer_only():
    last = lambda path, value: path[0] == "l1"
    pure = ntk_zoo.from_nnx(nnx_mlp(), wrt=nnx.All(nnx.Param, last))
    assert len(jax.tree.leaves(pure.params)) == 2
    per_leaf = ntk_zoo.ntk_fn(adapted_mlps()["nnx"], sum_params=False)(X1, X2)
    want = sum(jax.tree.leaves(per_leaf["l1"]))
    assert rel_error(ntk_zoo.ntk_fn(pure)(X1, X2), want) <= EXACT


class LinenTwoHeads(nn.Module):
    def setup(self):
        self.body = nn.Dense(6, param_dtype=jnp.float64)
        self.head = nn.Dense(3, param_dtype=jnp.float64)

    def __call__(self, x):
        return self.head(jnp.tanh(self.body(x)))

    def features(self, x, scale):
        return scale * jnp.tanh(self.body(x))


def test_linen_method_and_pass_through_arguments():
    variables = {
        "params": {
            "body": {"kernel": W["w0"], "bias": W["b0"]},
            "head": {"kernel": W["w1"], "bias": W["b1"]},
        }
    }
    pure = ntk_zoo.from_linen(
        LinenTwoHeads(), variables, method="features", scale=2.0, params_filter="body/"
    )
    body = {"w0": W["w0"], "b0": W["b0"]}
    want = oracle_ntk(lambda p, x: 2.0 * jnp.tanh(add_bias(x @ p["w0"], p["b0"])), X1, X2, body)
    assert rel_error(ntk_zoo.ntk_fn(pure)(X1, X2), want) <= EXACT


def test_missing_framework_says_how_to_install(monkeypatch):
    import importlib

    from ntk_zoo import _extras

    real = importlib.import_module

    def fake(name, *args):
        if name.split(".")[0] == "haiku":
            raise ModuleNotFoundError("No module named 'haiku'", name="haiku")
        return real(name, *args)

    monkeypatch.setattr(_extras.importlib, "import_module", fake)
    with pytest.raises(ImportError, match=r"pip install 'ntk-zoo\[haiku\]'"):
        ntk_zoo.from_haiku(None, {})
