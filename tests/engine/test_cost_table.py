"""auto's cost table: schema, the shipped row, the user cache and its fallbacks, and picks."""

import json
import warnings

import jax.numpy as jnp
import pytest

import ntk_zoo
from ntk_zoo.core import (
    CostTable,
    active_table,
    cache_path,
    reset_tables,
    shipped_path,
    shipped_tables,
    use_table,
)
from ntk_zoo.engine import _cost


def f(params, x):
    return jnp.tanh(x @ params["w"]) @ params["v"]


PARAMS = {"w": jnp.ones((5, 3)) / 5, "v": jnp.ones((3, 2)) / 3}
X = jnp.arange(20.0).reshape(4, 5) / 20
TABLE = CostTable("cpu", 1e11, 2e10, 1e10, 2e-6, machine={"cpu": "test"})


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """An empty cache directory of the test's own, and tables read afresh."""
    monkeypatch.setenv("NTK_ZOO_CACHE_DIR", str(tmp_path))
    reset_tables()
    yield tmp_path
    reset_tables()


def test_row_round_trips_and_names_its_schema():
    row = TABLE.to_json()
    assert row["schema"] == CostTable.SCHEMA and row["backend"] == "cpu"
    assert CostTable.from_json(json.loads(json.dumps(row))) == TABLE


@pytest.mark.parametrize(
    "change, match",
    [
        ({"schema": 99}, "schema 99"),
        ({"matmul_flops": None}, "matmul_flops must be a number"),
        ({"einsum_flops": -1.0}, "einsum_flops must be positive"),
        ({"backend": 3}, "backend must be a string"),
    ],
)
def test_bad_rows_are_refused_with_the_reason(change, match):
    with pytest.raises(ValueError, match=match):
        CostTable.from_json({**TABLE.to_json(), **change})
    row = TABLE.to_json()
    del row["overhead_s"]
    with pytest.raises(ValueError, match="missing overhead_s"):
        CostTable.from_json(row)


def test_seconds_take_the_rate_of_the_kind_and_the_slower_of_compute_and_memory():
    t = CostTable("cpu", 1e11, 1e9, 1e10, 1e-6)
    assert t.seconds(1e9, 0.0, "matmul") == pytest.approx(1e-6 + 1e-2)
    assert t.seconds(1e9, 0.0, "einsum") == pytest.approx(1e-6 + 1.0)
    assert t.seconds(1.0, 1e10, "memory", steps=3) == pytest.approx(3e-6 + 1.0)
    assert t.seconds(1e9, 1e9, "pass") == pytest.approx(1e-6 + 1e-2 + 1e-1)
    with pytest.raises(ValueError, match="kind='gemm' is not a kind"):
        t.seconds(1.0, 1.0, "gemm")


def test_the_shipped_file_loads_and_describes_its_machine():
    data = json.loads(shipped_path().read_text())
    assert data["schema"] == CostTable.SCHEMA
    tables = shipped_tables()
    assert "cpu" in tables and set(tables) == set(data["backends"])
    for backend, table in tables.items():
        assert table.backend == backend and table.source == "shipped"
        assert {"cpu", "cores", "device", "jax", "jaxlib", "date"} <= set(table.machine)


def test_without_a_cache_auto_uses_the_shipped_row_else_the_default():
    assert active_table("cpu") == shipped_tables()["cpu"]
    assert active_table("cpu").source == "shipped"
    other = active_table("no-such-backend")
    assert other.source == "default" and other.backend == "no-such-backend"


def test_a_cached_table_is_used_and_choose_reports_it(cache):
    path = cache_path("cpu")
    assert path.parent == cache and path.name == "cost_table-cpu.json"
    path.write_text(json.dumps(TABLE.to_json()))
    choice = ntk_zoo.ntk_fn(f, vmap_axes=0).choose(X, None, PARAMS)
    method, costs = choice
    assert choice.method is method and choice.costs is costs
    assert choice.table == TABLE and choice.table.source == f"cache: {path}"
    assert choice.table.machine == {"cpu": "test"}


@pytest.mark.parametrize("text", ["{not json", json.dumps({**TABLE.to_json(), "schema": 0})])
def test_a_corrupt_cache_warns_once_and_falls_back_to_the_shipped_row(text):
    cache_path("cpu").write_text(text)
    with pytest.warns(RuntimeWarning, match="Ignoring the cost table cached at"):
        assert active_table("cpu").source == "shipped"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert active_table("cpu").source == "shipped"
        ntk_zoo.ntk_fn(f, vmap_axes=0).choose(X, None, PARAMS)


def test_calibrate_measures_and_caches_a_table_that_auto_then_uses():
    table = ntk_zoo.calibrate("cpu", budget_s=0.2)
    assert table.source == "measured" and table.backend == "cpu"
    assert table.matmul_flops > 0 and table.einsum_flops > 0 and table.memory_bytes > 0
    assert table.conv_grad_flops > 0  # per-example conv weight gradients, measured too
    stored = CostTable.from_json(json.loads(cache_path("cpu").read_text()))
    assert stored == table and stored.machine == table.machine
    assert active_table("cpu") is table  # in this process at once
    reset_tables()
    assert active_table("cpu") == table  # and read back from the cache later
    with pytest.raises(ValueError, match="budget_s"):
        ntk_zoo.calibrate(budget_s=0)


# One tiny problem on three extreme machines: each pick is the method that avoids the slow
# kind of step. Jacobian contraction and structured derivatives contract small blocks (small
# einsums), NTK-vector products only run passes over the network; structured derivatives does
# the fewest FLOPs of whole passes; Jacobian contraction does the least work in all (one VJP per
# output and one contraction), so it wins where every kind is equally slow. (Slow memory alone
# picked it until its Jacobian's layout copy before the contraction was priced: now NTK-vector
# products, which write no Jacobian, moves fewer bytes there.)
@pytest.mark.parametrize(
    "rates, expected",
    [
        ((1e6, 1e12, 1e12), "structured_derivatives"),  # slow large matmuls and passes
        ((1e12, 1e3, 1e12), "ntk_vector_products"),  # slow small einsums
        ((1e12, 1e12, 1e3), "ntk_vector_products"),  # slow memory
        ((1e3, 1e3, 1e3), "jacobian_contraction"),  # every kind slow
    ],
)
def test_the_table_decides_auto_s_pick(rates, expected):
    use_table(CostTable("cpu", *rates, 0.0))
    kernel_fn = ntk_zoo.ntk_fn(f, vmap_axes=0, trace_axes=())
    choice = kernel_fn.choose(X, None, PARAMS)
    assert choice.method.value == expected, choice
    assert choice.costs[expected] == min(choice.costs.values())


@pytest.mark.parametrize(
    ("costs", "expected"),
    [
        ((2.0, 3.0, 2.0), "structured_derivatives"),  # JC and SD tied: SD
        ((2.0, 2.0, 3.0), "jacobian_contraction"),  # JC and VP tied: JC
        ((2.0, 3.0, 2.0 * (1 + 1e-6)), "jacobian_contraction"),  # not a tie
        ((0.0, 0.0, 0.0), "structured_derivatives"),  # an empty kernel
    ],
)
def test_ties_go_to_structured_derivatives_then_jacobian_contraction(costs, expected, monkeypatch):
    names = ("jacobian_contraction", "ntk_vector_products", "structured_derivatives")
    fake = lambda problem, table, replays=None, sum_params=False: dict(zip(names, costs))
    monkeypatch.setattr(_cost, "estimate", fake)
    choice = _cost.cheapest(None)
    assert choice.method == expected
    assert choice.costs == dict(zip(names, costs))
