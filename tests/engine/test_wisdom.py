"""auto's measured choice and its wisdom: a scripted clock drives the timing (no real timings)."""

import json

import jax
import jax.numpy as jnp
import pytest

import ntk_zoo
from ntk_zoo.engine import _cost, _measure, _ntk, _wisdom
from tests.oracle import oracle_ntk, rel_error

EXACT = 1e-10  # float64 against float64
RUNNABLE = ["jacobian_contraction", "ntk_vector_products", "structured_derivatives"]


def f(params, x):
    return jnp.tanh(x @ params["w"]) @ params["v"]


def g(params, x):  # another model with the same shapes
    return jnp.sin(x @ params["w"]) @ params["v"]


K1, K2, K3 = jax.random.split(jax.random.key(0), 3)
PARAMS = {"w": jax.random.normal(K1, (3, 4)), "v": jax.random.normal(K2, (4, 2))}
X = jax.random.normal(K3, (3, 3))


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NTK_ZOO_CACHE_DIR", str(tmp_path / "cache"))
    ntk_zoo.clear_wisdom()
    yield tmp_path / "cache"
    ntk_zoo.clear_wisdom()


class ScriptedClock:
    """Returns 0, d1, d1, d1 + d2, ...: candidate k's timed call lasts ``durations[k]``."""

    def __init__(self, durations):
        self.durations, self.now, self.calls = list(durations), 0.0, 0

    def __call__(self):
        if self.calls % 2:  # the end of a timed call
            self.now += self.durations[(self.calls // 2) % len(self.durations)]
        self.calls += 1
        return self.now


def never():
    raise AssertionError("measured although the pick was stored")


def kernel_fn(model=f, clock=None, within=1.0, **kw):
    # within=1: one candidate (one compile) where the test is not about the choice among them
    options = ntk_zoo.AutoOptions(measure=True, within=within, repeats=1, clock=clock or never)
    return ntk_zoo.ntk_fn(model, vmap_axes=0, trace_axes=(), auto=options, **kw)


def _order():
    costs = ntk_zoo.ntk_fn(f, vmap_axes=0, trace_axes=()).choose(X, None, PARAMS).costs
    return [m.value for m in _measure.candidates(costs, 1e9)]


# Structured derivatives, the estimate's pick here, is what the one-candidate tests below run.
@pytest.mark.parametrize("winner", ["jacobian_contraction", "ntk_vector_products"])
def test_fastest_measured_method_runs_and_equals_it_forced(winner):
    order = _order()
    durations = [1.0 if m == winner else 5.0 for m in order]
    kfn = kernel_fn(clock=ScriptedClock(durations), within=1e9)
    got = kfn(X, None, PARAMS)
    choice = kfn.choose(X, None, PARAMS)
    assert (choice.method, choice.measured, choice.source) == (winner, True, "measured")
    assert choice.times == dict(zip(order, durations))
    forced = ntk_zoo.ntk_fn(f, vmap_axes=0, trace_axes=(), method=winner)(X, None, PARAMS)
    assert rel_error(got, forced) <= 1e-13  # the same method: rounding of one compile vs another
    assert rel_error(got, oracle_ntk(f, X, None, PARAMS, trace_axes=())) <= EXACT


def test_candidates_are_within_the_factor_of_the_best():
    costs = {"jacobian_contraction": 2.0, "ntk_vector_products": 7.0, "structured_derivatives": 1}
    assert _measure.candidates(costs, 3.0) == ["structured_derivatives", "jacobian_contraction"]
    assert _measure.candidates(costs, 1.0) == ["structured_derivatives"]


def test_over_budget_candidates_are_skipped():
    options = ntk_zoo.AutoOptions(measure=True, memory_budget=1, within=1.0, clock=never)
    kfn = ntk_zoo.ntk_fn(f, vmap_axes=0, auto=options)
    choice = kfn.choose(X, None, PARAMS)
    # A compiled program holds more than one byte: the estimate's pick, said so.
    assert (choice.source, choice.measured, choice.times) == ("estimate", False, {})
    assert list(choice.skipped) == [choice.method.value]
    assert choice.method == ntk_zoo.ntk_fn(f, vmap_axes=0).choose(X, None, PARAMS).method


def test_rerun_reads_the_wisdom_and_measures_nothing(cache):
    first = kernel_fn(clock=ScriptedClock([1.0, 2.0, 3.0]))
    first(X, None, PARAMS)
    picked = first.choose(X, None, PARAMS).method
    assert _wisdom.wisdom_path().parent == cache and _wisdom.wisdom_path().exists()
    _wisdom._memory.clear(), _wisdom._loaded.clear()  # a new process: only the file is left
    again = kernel_fn()  # its clock fails the test if called
    got = again(X, None, PARAMS)
    choice = again.choose(X, None, PARAMS)
    assert (choice.method, choice.source, choice.measured) == (picked, "wisdom", True)
    assert rel_error(got, oracle_ntk(f, X, None, PARAMS, trace_axes=())) <= EXACT
    # Under the user's jit nothing can be timed: the stored pick runs.
    assert rel_error(jax.jit(again)(X, None, PARAMS), got) <= 1e-13


def _key(model=f, x=X, **kw):
    kfn = kernel_fn(model, **kw)
    return _wisdom.fingerprint(kfn.problem(x, None, PARAMS), kfn._settings())


def test_fingerprint_changes_with_model_shapes_options_and_version(monkeypatch):
    # options: the axes, sum_params, the methods' options and auto's own
    base = _key()
    assert _key() == base  # the same program, traced again
    changed = [
        _key(g),
        _key(x=X[:2]),
        _key(x=X.astype(jnp.float32)),
        _key(diagonal_axes=(0,)),
        _key(sum_params=False),
        _key(structured=ntk_zoo.StructuredOptions(uses="jacobian")),
        _key(vector_products=ntk_zoo.VectorProductOptions(form="linearized")),
    ]
    options = ntk_zoo.AutoOptions(measure=True, within=2.0)
    changed.append(
        _wisdom.fingerprint(
            kernel_fn().problem(X, None, PARAMS),
            ntk_zoo.ntk_fn(f, vmap_axes=0, trace_axes=(), auto=options)._settings(),
        )
    )
    monkeypatch.setattr(ntk_zoo, "__version__", "0.0.0-other")
    changed.append(_key())
    assert len({base, *changed}) == len(changed) + 1


def test_corrupt_file_is_ignored_with_a_warning_and_rewritten(cache):
    cache.mkdir(parents=True)
    _wisdom.wisdom_path().write_text("{not json")
    with pytest.warns(RuntimeWarning, match="Ignoring the wisdom file"):
        kernel_fn(clock=ScriptedClock([1.0])).choose(X, None, PARAMS)
    assert json.loads(_wisdom.wisdom_path().read_text())["schema"] == _wisdom.SCHEMA


def test_stale_entry_is_ignored_with_a_warning(cache):
    kernel_fn(clock=ScriptedClock([1.0])).choose(X, None, PARAMS)
    data = json.loads(_wisdom.wisdom_path().read_text())
    (key,) = data["entries"]
    data["entries"][key]["method"] = "a_method_of_another_version"
    _wisdom.wisdom_path().write_text(json.dumps(data))
    _wisdom._memory.clear(), _wisdom._loaded.clear()
    with pytest.warns(RuntimeWarning, match="stale wisdom entry"):
        choice = kernel_fn(clock=ScriptedClock([1.0])).choose(X, None, PARAMS)
    assert choice.source == "measured"


def test_unwritable_cache_dir_warns_once_and_keeps_the_pick_in_memory(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("NTK_ZOO_CACHE_DIR", str(blocker / "cache"))  # under a file: unwritable
    with pytest.warns(RuntimeWarning, match="Cannot write auto's wisdom"):
        got = kernel_fn(clock=ScriptedClock([1.0]))(X, None, PARAMS)
    assert rel_error(got, oracle_ntk(f, X, None, PARAMS, trace_axes=())) <= EXACT
    assert kernel_fn().choose(X, None, PARAMS).source == "wisdom"  # from memory


def test_clear_wisdom_forgets(cache):
    kernel_fn(clock=ScriptedClock([1.0])).choose(X, None, PARAMS)
    assert _wisdom.wisdom_path().exists()
    ntk_zoo.clear_wisdom()
    assert not _wisdom.wisdom_path().exists()
    assert kernel_fn(clock=ScriptedClock([1.0])).choose(X, None, PARAMS).source == "measured"


def test_estimates_by_default_and_rejects_bad_options():
    choice = ntk_zoo.ntk_fn(f, vmap_axes=0).choose(X, None, PARAMS)
    assert (choice.measured, choice.source, choice.times) == (False, "estimate", {})
    with pytest.raises(TypeError, match="AutoOptions"):
        ntk_zoo.ntk_fn(f, auto={"measure": True})
    with pytest.raises(ValueError, match="within"):
        ntk_zoo.AutoOptions(within=0.5)


def test_batched_measures_once_reports_the_pick_and_reuses_it():
    kfn = kernel_fn(clock=ScriptedClock([1.0]))  # one candidate: the choice is tested above
    run = ntk_zoo.batched(kfn, batch_size=2, progress=False)  # 2×2 blocks, 3 computed
    got = run(X, None, PARAMS)
    picked = run.stats.method
    assert picked in RUNNABLE and run.stats.method_source == "measured"
    assert run.stats.method_times == {picked: 1.0}
    # the methods not timed, each with its reason (only `picked` was a candidate here)
    assert set(run.stats.method_excluded) == set(RUNNABLE) - {picked}
    assert all(isinstance(why, str) and why for why in run.stats.method_excluded.values())
    assert rel_error(got, oracle_ntk(f, X, None, PARAMS, trace_axes=())) <= EXACT
    again = ntk_zoo.batched(kernel_fn(), batch_size=2, progress=False)  # its clock fails if used
    assert rel_error(again(X, None, PARAMS), got) <= 1e-13
    assert (again.stats.method, again.stats.method_source) == (picked, "wisdom")


# Issue 21: an estimate wrong by more than `within`. Scripted estimates (SD best, JC 2x, VP 8x)
# replace the cost model's; the scripted clock makes VP, timed last, the fastest.
SCRIPTED = {"structured_derivatives": 1.0, "jacobian_contraction": 2.0, "ntk_vector_products": 8.0}


@pytest.fixture
def misestimated(monkeypatch):
    cheapest = _cost.cheapest

    def scripted(problem, **kw):
        choice = cheapest(problem, **kw)
        return _cost.Choice(ntk_zoo.Method("structured_derivatives"), SCRIPTED, choice.table)

    monkeypatch.setattr(_cost, "cheapest", scripted)


def measured_kfn(runs, clock):
    options = ntk_zoo.AutoOptions(measure=True, repeats=1, runs=runs, clock=clock)
    return ntk_zoo.ntk_fn(f, vmap_axes=0, trace_axes=(), auto=options)


def test_a_misestimated_method_is_timed_and_picked_when_the_job_affords_it(misestimated):
    # runs=1000: the job is estimated at 1000 s; timing VP (~2 x 8 s + one compile) fits in 5%.
    kfn = measured_kfn(1000, ScriptedClock([5.0, 5.0, 1.0]))
    got = kfn(X, None, PARAMS)
    choice = kfn.choose(X, None, PARAMS)
    assert (choice.method, choice.source) == ("ntk_vector_products", "measured")
    assert list(choice.times) == ["structured_derivatives", "jacobian_contraction", RUNNABLE[1]]
    assert choice.excluded == {}
    assert rel_error(got, oracle_ntk(f, X, None, PARAMS, trace_axes=())) <= EXACT


def test_a_single_call_keeps_the_within_filter_and_says_why(misestimated):
    kfn = measured_kfn(1, ScriptedClock([5.0, 5.0, 1.0]))
    choice = kfn.choose(X, None, PARAMS)
    assert (choice.method, choice.source) == ("structured_derivatives", "measured")
    assert list(choice.times) == ["structured_derivatives", "jacobian_contraction"]
    assert list(choice.excluded) == ["ntk_vector_products"]
    assert "8x the best (> within=3)" in choice.excluded["ntk_vector_products"]
    assert "runs=1" in choice.excluded["ntk_vector_products"]


@pytest.mark.parametrize("runs", [1, 2, 10, 100, 400, 1000, 10**6])
@pytest.mark.parametrize("compile_s", [0.0, 0.5, 30.0])
def test_the_time_spent_on_methods_beyond_within_is_bounded(runs, compile_s):
    costs = {"structured_derivatives": 1.0, "jacobian_contraction": 4.0, "ntk_vector_products": 8}
    options = ntk_zoo.AutoOptions(runs=runs, repeats=2)
    more, excluded = _measure.affordable(costs, options, compile_s)
    spent = sum(compile_s + 3 * costs[m.value] for m in more)
    assert spent <= options.overhead * runs * 1.0
    assert {m.value for m in more} | set(excluded) == set(costs) - {"structured_derivatives"}
    assert [m.value for m in more] == sorted((m.value for m in more), key=costs.get)
    if runs == 1:
        assert more == []  # a single call: today's candidates, exactly
    if runs == 10**6:
        assert len(more) == 2  # a long job times every method once


def test_a_rerun_reads_the_wisdom_and_a_longer_job_measures_again(misestimated):
    measured_kfn(1, ScriptedClock([5.0, 5.0])).choose(X, None, PARAMS)
    _wisdom._memory.clear(), _wisdom._loaded.clear()  # a new process
    assert measured_kfn(1, never).choose(X, None, PARAMS).source == "wisdom"
    # The stored decision never timed VP, which a 1000-run job would: it is timed now.
    longer = measured_kfn(1000, ScriptedClock([5.0, 5.0, 1.0])).choose(X, None, PARAMS)
    assert (longer.method, longer.source) == ("ntk_vector_products", "measured")
    _wisdom._memory.clear(), _wisdom._loaded.clear()
    for runs in (1000, 1001, 1):  # the same job, a similar one, a single call: nothing timed
        again = measured_kfn(runs, never).choose(X, None, PARAMS)
        assert (again.method, again.source) == ("ntk_vector_products", "wisdom")
        assert again.times == longer.times


def test_runs_is_not_part_of_the_wisdom_key_and_default_keys_are_unchanged():
    settings = lambda **kw: ntk_zoo.ntk_fn(f, auto=ntk_zoo.AutoOptions(**kw))._settings()
    assert settings(runs=5000) == settings()
    assert settings()["auto"] == "within=3.0,repeats=2,budget=None"  # the key before issue 21
    assert settings(overhead=0.2) != settings()


def test_batched_passes_its_block_count(monkeypatch):
    seen = []
    measure = _ntk.measure
    monkeypatch.setattr(_ntk, "measure", lambda *a: seen.append(a[3].runs) or measure(*a))
    run = ntk_zoo.batched(kernel_fn(clock=ScriptedClock([1.0])), batch_size=1, progress=False)
    run(X, None, PARAMS)  # 3x3 blocks, 6 computed (symmetric)
    assert seen == [6]
    assert run.stats.method_source == "measured"
