"""auto prices per-example convolution weight gradients (Jacobian contraction's grouped
convolutions) at their own calibrated rate, with a default for tables written before it."""

import json

import jax.numpy as jnp
import pytest
from jax import lax

import ntk_zoo
from ntk_zoo.core import (
    CONV_GRAD_BYTES_SHARE,
    CONV_GRAD_SHARE,
    CostTable,
    _calibration,
    count,
    reset_tables,
    use_table,
)

RATES = (1e11, 2e10, 1e10, 2e-6)
DIMS = ("NHWC", "HWIO", "NHWC")


def conv_net(params, x):
    h = jnp.tanh(lax.conv_general_dilated(x, params["k"], (1, 1), "SAME", dimension_numbers=DIMS))
    return h.reshape(h.shape[0], -1) @ params["w"]


def mlp(params, x):
    return jnp.tanh(x.reshape(x.shape[0], -1) @ params["v"]) @ params["u"]


CONV = {"k": jnp.ones((3, 3, 2, 4)) / 10, "w": jnp.ones((4 * 4 * 4, 3)) / 50}
DENSE = {"v": jnp.ones((4 * 4 * 2, 8)) / 10, "u": jnp.ones((8, 3)) / 8}
X = jnp.linspace(-1, 1, 5 * 4 * 4 * 2).reshape(5, 4, 4, 2)


@pytest.fixture(autouse=True)
def tables(tmp_path, monkeypatch):
    monkeypatch.setenv("NTK_ZOO_CACHE_DIR", str(tmp_path))
    reset_tables()
    yield
    reset_tables()


def test_a_row_without_the_rate_reads_with_the_default_share():
    old = CostTable("cpu", *RATES).to_json()
    assert "conv_grad_flops" not in old  # rows keep their old form until measured
    table = CostTable.from_json(old)
    assert table.conv_grad_flops is None
    assert table.conv_grad_rate == pytest.approx(CONV_GRAD_SHARE * 1e11)
    assert table.seconds(1e9, 0.0, "conv_grad", steps=0) == pytest.approx(
        1e9 / (CONV_GRAD_SHARE * 1e11)
    )


def test_a_measured_rate_round_trips_and_is_checked():
    table = CostTable("cpu", *RATES, conv_grad_flops=5e9)
    row = json.loads(json.dumps(table.to_json()))
    assert row["conv_grad_flops"] == 5e9 and CostTable.from_json(row) == table
    assert table.seconds(1e9, 0.0, "conv_grad", steps=0) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="conv_grad_flops must be positive"):
        CostTable.from_json({**row, "conv_grad_flops": 0.0})


def _costs(f, params, conv_grad_flops):
    use_table(CostTable("cpu", *RATES, conv_grad_flops=conv_grad_flops))
    return ntk_zoo.ntk_fn(f, vmap_axes=0, trace_axes=()).choose(X, None, params).costs


def test_jacobian_contraction_prices_its_conv_weight_gradients_at_that_rate():
    slow, fast = _costs(conv_net, CONV, 1e8), _costs(conv_net, CONV, 1e11)
    problem = ntk_zoo.ntk_fn(conv_net, vmap_axes=0, trace_axes=()).problem(X, None, CONV)
    counts = count(problem)
    assert counts.conv1 > 0 and counts.conv1 < counts.fp1
    # one weight gradient per example and output: o · (the convolutions' FLOPs on the batch),
    # each convolution's a roofline of its own: its FLOPs at the rate, what it moves (the input
    # and cotangents read, a kernel per example written) at CONV_GRAD_BYTES_SHARE of memory
    ((flops, values),) = counts.grads1
    assert flops == counts.conv1
    assert values == X.size + 5 * 4 * 4 * 4 + 5 * CONV["k"].size
    o, moved = counts.o1, counts.o1 * values * counts.itemsize
    bandwidth = CONV_GRAD_BYTES_SHARE * RATES[2]
    seconds = lambda rate: max(o * flops / rate, moved / bandwidth)
    jc = "jacobian_contraction"
    assert slow[jc] - fast[jc] == pytest.approx(seconds(1e8) - seconds(1e11), rel=1e-9)
    for other in ("structured_derivatives", "ntk_vector_products"):
        assert slow[other] == pytest.approx(fast[other], rel=1e-12)


def test_small_conv_weight_gradients_are_memory_bound(monkeypatch):
    # Grouped convolutions with few channels run far below their FLOP rate (0.12-0.35 of the
    # memory rate for what they move, measured): however fast the table's conv_grad rate, each
    # costs at least what it moves at CONV_GRAD_BYTES_SHARE of the memory rate.
    problem = ntk_zoo.ntk_fn(conv_net, vmap_axes=0, trace_axes=()).problem(X, None, CONV)
    counts = count(problem)
    ((_, values),) = counts.grads1
    floor = counts.o1 * values * counts.itemsize / (CONV_GRAD_BYTES_SHARE * RATES[2])
    jc = "jacobian_contraction"
    fast, instant = _costs(conv_net, CONV, 1e11)[jc], _costs(conv_net, CONV, 1e30)[jc]
    assert fast == pytest.approx(instant, rel=1e-12)  # memory-bound at 1e11 already
    monkeypatch.setattr(_calibration, "CONV_GRAD_BYTES_SHARE", 1e30)  # moving costs nothing
    assert instant - _costs(conv_net, CONV, 1e30)[jc] == pytest.approx(floor, rel=1e-9)


def test_models_without_convolutions_are_priced_as_before():
    slow, fast = _costs(mlp, DENSE, 1e6), _costs(mlp, DENSE, 1e12)
    assert slow == pytest.approx(fast, rel=1e-12)
