"""A convolution kernel's dense Jacobian factor (its per-example weight gradients) by matrix
products, not by ``vmap`` of the convolution's transpose (grouped convolutions, slow on
XLA:CPU): equal to the transpose's, and exact end to end against the float64 oracle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntk_zoo
from ntk_zoo.structured import _registry
from ntk_zoo.structured.rules import _linear_algebra
from tests.oracle import oracle_ntk, rel_error
from tests.structured.primitives import PRIMS
from tests.structured.test_rules import _use

KERNELS = [p for p in PRIMS if p.primitive == "conv_general_dilated" and p.name.endswith("-kernel")]
GROUPED = ("groups", "depthwise", "batch-groups")


@pytest.mark.parametrize("per_offset", [False, True], ids=["patches", "per-offset"])
@pytest.mark.parametrize("outputs", [1, 3])
@pytest.mark.parametrize("prim", KERNELS, ids=lambda p: p.name)
def test_kernel_factor_equals_the_transpose(prim, outputs, per_offset, monkeypatch):
    # Every layout, stride, padding and dilation of the rule's test convolutions; both
    # formulations (per filter offset where the convolution has unit strides).
    if per_offset:
        monkeypatch.setattr(_linear_algebra, "_PER_OFFSET_POSITIONS", 1)
    _, _, eqn, idx, args = _use(prim)
    s = _registry.structure(eqn, idx, args)
    if any(prim.name == f"conv-{g}-kernel" for g in GROUPED):
        assert s.factor is None  # grouped: the transpose (vmap) as before
        return
    assert s.factor is not None
    y = eqn.outputs[0]
    rng = np.random.default_rng(outputs)
    cts = jnp.asarray(rng.standard_normal((outputs, *y.shape)))
    pullback = _registry.pullback(eqn, idx, args).pullback
    want = jax.vmap(lambda c: pullback([c]))(cts)
    got = s.factor(cts)
    assert got.shape == (outputs, *eqn.inputs[idx].shape)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # matrix products and data movement only: no (grouped) convolution left for XLA
    jaxpr = jax.make_jaxpr(s.factor)(cts).jaxpr
    assert "conv_general_dilated" not in {e.primitive.name for e in jaxpr.eqns}


def _conv_net(params, x):
    dn = ("NHWC", "HWIO", "NHWC")
    conv = lambda h, w, s: jax.lax.conv_general_dilated(h, w, (s, s), "SAME", dimension_numbers=dn)
    h = jnp.tanh(conv(x, params["c1"], 1))  # 16×16 positions: the per-offset product
    h = jnp.tanh(conv(h, params["c2"], 2))  # strided: the patches product
    return h.reshape(h.shape[0], -1) @ params["out"]


@pytest.mark.parametrize("kernel", ["full", "pntk"])
def test_dense_conv_leaves_exact_against_the_oracle(kernel):
    # Every leaf summed densely (uses="jacobian"), examples under vmap: each convolution
    # kernel's factor is the rule's, and the kernel is the oracle's.
    rng = np.random.default_rng(0)
    params = {
        "c1": jnp.asarray(rng.standard_normal((3, 3, 2, 3)) / 3),
        "c2": jnp.asarray(rng.standard_normal((3, 3, 3, 4)) / 5),
        "out": jnp.asarray(rng.standard_normal((8 * 8 * 4, 2)) / 8),
    }
    x1 = jnp.asarray(rng.standard_normal((3, 16, 16, 2)))
    x2 = jnp.asarray(rng.standard_normal((2, 16, 16, 2)))
    options = ntk_zoo.StructuredOptions(uses="jacobian")
    kw = {"cotangents": "pntk"} if kernel == "pntk" else {"trace_axes": ()}
    fn = ntk_zoo.ntk_fn(
        _conv_net, method="structured_derivatives", vmap_axes=0, structured=options, **kw
    )
    for b in (x2, None):
        got = fn(x1, b, params)
        want = oracle_ntk(_conv_net, x1, x2 if b is not None else x1, params, trace_axes=())
        if kernel == "pntk":
            want = np.asarray(want).sum((2, 3)) / 2
        assert rel_error(got, want) <= 1e-10
    text = jax.jit(lambda x: fn(x, None, params)).lower(x1).as_text()
    assert "feature_group_count = 1" in text  # the model's own convolutions
    assert "feature_group_count = 3" not in text  # no per-example grouped weight gradient
