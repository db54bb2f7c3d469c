"""auto measures a candidate only where measuring can pay, and batched keeps what measuring
computed: the timed blocks and the winner's compiled program (scripted clock, no real timings)."""

import jax.numpy as jnp
import pytest

import ntk_zoo
from ntk_zoo.engine import _measure, _ntk
from tests.engine.test_wisdom import (  # noqa: F401 (fixtures: cache, misestimated)
    PARAMS,
    RUNNABLE,
    ScriptedClock,
    X,
    cache,
    f,
    kernel_fn,
    measured_kfn,
    misestimated,
    never,
)
from tests.oracle import oracle_ntk, rel_error

EXACT = 1e-10

# The benchmark's case (benchmarks/results/auto.md): JC estimated best, SD 1.2x, VP far; 60 ms
# blocks, a 1 s compile.
COSTS = {"jacobian_contraction": 1.0, "structured_derivatives": 1.2, "ntk_vector_products": 9.0}


def test_expected_gain_is_zero_where_the_estimate_cannot_be_wrong_enough():
    assert _measure.expected_gain(1.2, 1.0) == 0.0  # within=1: no error assumed
    assert _measure.expected_gain(3.0, 3.0) == 0.0  # at the edge of the error
    ties, near, far = (_measure.expected_gain(r, 3.0) for r in (1.0, 1.2, 2.0))
    assert 0 < far < near < ties < 0.5


@pytest.mark.parametrize(("runs", "timed"), [(21, False), (80, False), (5000, True)])
def test_a_candidate_is_timed_only_where_its_compile_can_pay(runs, timed):
    options = ntk_zoo.AutoOptions(runs=runs, repeats=2)
    paying, excluded = _measure.pays(COSTS, options, best_s=0.06, compile_s=1.0)
    assert ([m.value for m in paying] == ["structured_derivatives"]) is timed
    assert ("structured_derivatives" in excluded) is not timed
    if not timed:
        assert f"runs={runs}" in excluded["structured_derivatives"]
        assert "expected saving" in excluded["structured_derivatives"]


def test_a_single_call_still_times_every_candidate():
    options = ntk_zoo.AutoOptions(runs=1, repeats=2)
    paying, excluded = _measure.pays(COSTS, options, best_s=0.06, compile_s=1.0)
    assert [m.value for m in paying] == ["structured_derivatives"] and excluded == {}


@pytest.mark.usefixtures("misestimated")
def test_a_short_job_times_only_the_estimated_best_and_a_long_one_measures_again():
    # Scripted estimates: SD best, JC 2x (within 3), VP 8x. SD times at 1 ms a call: a short
    # job cannot repay compiling JC; a long one can, and the stored pick does not cover it.
    short = measured_kfn(21, ScriptedClock([1e-3])).choose(X, None, PARAMS)
    assert (short.method, short.source) == ("structured_derivatives", "measured")
    assert list(short.times) == ["structured_derivatives"]
    assert "expected saving" in short.excluded["jacobian_contraction"]
    assert set(short.excluded) == {"jacobian_contraction", "ntk_vector_products"}
    assert measured_kfn(21, never).choose(X, None, PARAMS).source == "wisdom"
    long = measured_kfn(10**9, ScriptedClock([1e-3, 1e-4, 5e-3])).choose(X, None, PARAMS)
    assert (long.method, long.source) == ("jacobian_contraction", "measured")
    assert list(long.times)[:2] == ["structured_derivatives", "jacobian_contraction"]


def test_batched_runs_the_measured_program_and_keeps_the_timed_blocks(monkeypatch):
    through_jit = []  # x2 is None for each block the jitted kernel (not the measured) ran
    jitted = _ntk.KernelFn.__dict__["_jitted"]

    def spy(self):
        run = jitted.func(self)

        def counted(x1, x2, *rest):
            through_jit.append(x2 is None)
            return run(x1, x2, *rest)

        return counted

    monkeypatch.setattr(_ntk.KernelFn, "_jitted", property(spy))
    run = ntk_zoo.batched(kernel_fn(clock=ScriptedClock([1.0])), batch_size=1, progress=False)
    got = run(X, None, PARAMS)  # 3x3 blocks: 3 on the diagonal, 3 above
    assert run.stats.method_source == "measured" and run.stats.computed == 6
    # warm-up + 1 timed call computed two off-diagonal blocks; the measured program the third
    assert run.stats.measured_blocks == 2
    assert through_jit == [True, True, True]  # only the diagonal blocks' program was compiled
    assert rel_error(got, oracle_ntk(f, X, None, PARAMS, trace_axes=())) <= EXACT
    again = ntk_zoo.batched(kernel_fn(), batch_size=1, progress=False)  # wisdom: nothing kept
    assert rel_error(again(X, None, PARAMS), got) <= 1e-13
    assert again.stats.measured_blocks == 0


def test_timed_blocks_of_every_candidate_are_exact(monkeypatch):
    # Three candidates timed (within=1e9, runs=1 by the kernel function, batched passes 15):
    # blocks computed by each candidate's timing calls are all placed, and all exact.
    x = jnp.concatenate([X, X[:2] * 0.5, X[:1] - 1.0])  # 6 examples: 15 off-diagonal blocks
    options = ntk_zoo.AutoOptions(measure=True, within=1e9, repeats=1, clock=ScriptedClock([1.0]))
    kfn = ntk_zoo.ntk_fn(f, vmap_axes=0, trace_axes=(), auto=options)
    run = ntk_zoo.batched(kfn, batch_size=1, progress=False)
    got = run(x, None, PARAMS)
    assert run.stats.measured_blocks == 2 * len(run.stats.method_times)
    assert set(run.stats.method_times) | set(run.stats.method_excluded) == set(RUNNABLE)
    assert rel_error(got, oracle_ntk(f, x, None, PARAMS, trace_axes=())) <= EXACT
