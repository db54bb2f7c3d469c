"""``auto`` traces structured derivatives once: its cost estimate counts the einsums of the
method's own trace, and when it picks the method it runs that trace (no second trace). The
fallback warnings of that trace are given when the method runs, not when it is only estimated."""

from __future__ import annotations

import warnings

import jax
import pytest

import ntk_zoo
from ntk_zoo.engine import _cost
from ntk_zoo.engine._method import Method
from ntk_zoo.structured import _contractor, _derivatives, _warnings
from tests.oracle import oracle_ntk, rel_error
from tests.structured.grid import MODELS

EXACT = 1e-10
SD = Method.STRUCTURED_DERIVATIVES


def _model(name):
    return next(m for m in MODELS if m.name == name)


@pytest.fixture
def traces(monkeypatch):
    """Each time structured derivatives are traced (its factors built and contracted): whether
    that trace summed the kernel over params (``sum_params``)."""
    calls = []
    real = _derivatives._structured

    def counted(problem, contractor, options, sum_params):
        calls.append(sum_params)
        return real(problem, contractor, options, sum_params)

    monkeypatch.setattr(_derivatives, "_structured", counted)
    monkeypatch.setattr(_warnings, "_WARNED", set())
    return calls


def _force(monkeypatch, winner: Method):
    """Make ``auto`` pick ``winner`` (its estimate is 0 s); the others' stay real."""
    methods = dict(_cost.METHODS)
    spec = methods[winner]
    if spec.traced_cost is not None:
        traced = lambda p, c, sum_params: (0.0, spec.traced_cost(p, c, sum_params)[1])
        methods[winner] = spec._replace(cost=lambda p, c: 0.0, traced_cost=traced)
    else:
        methods[winner] = spec._replace(cost=lambda p, c: 0.0)
    monkeypatch.setattr(_cost, "METHODS", methods)


CASES = [  # (grid model, x2 given, sum_params)
    ("conv-residual", True, True),
    ("attention", False, True),
    ("tied-across-layers", True, False),
    ("embedding-per-token", False, False),
]


@pytest.mark.parametrize(("name", "with_x2", "sum_params"), CASES)
@pytest.mark.parametrize("jit", [True, False], ids=["jitted", "traced"])
def test_auto_picking_structured_derivatives_traces_it_once(
    traces, monkeypatch, jit, name, with_x2, sum_params
):
    m = _model(name)
    x2 = m.x2 if with_x2 else None
    kw = dict(vmap_axes=m.vmap_axes, trace_axes=(), sum_params=sum_params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = ntk_zoo.ntk_fn(m.f, method="structured_derivatives", **kw)(m.x1, x2, m.params)
        del traces[:]
        _force(monkeypatch, SD)
        kernel_fn = ntk_zoo.ntk_fn(m.f, method="auto", **kw)
        run = kernel_fn if jit else (lambda *a: kernel_fn._compute(*a, {}))
        got = run(m.x1, x2, m.params)
    assert traces == [sum_params]  # once, and the program the method named runs
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert rel_error(got, want) <= 1e-14  # the same program (eager or compiled)
    oracle = oracle_ntk(m.f, m.x1, x2, m.params, trace_axes=(), sum_params=sum_params)
    assert rel_error(got, oracle) <= EXACT


def test_choose_estimates_without_computing(monkeypatch):
    m = _model("conv-residual")
    computed = []
    monkeypatch.setattr(
        _contractor.RunningContractor, "contract", lambda self, e: computed.append(1)
    )
    kernel_fn = ntk_zoo.ntk_fn(m.f, method="auto", vmap_axes=m.vmap_axes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        choice = kernel_fn.choose(m.x1, m.x2, m.params)
    assert computed == []
    assert choice.replay is None
    assert set(choice.costs) == {m.value for m in _cost.METHODS}


@pytest.mark.parametrize("name", ["conv-residual", "attention", "tied-across-layers"])
@pytest.mark.parametrize("with_x2", [True, False])
def test_auto_estimates_what_choose_estimates(name, with_x2):
    m = _model(name)
    x2 = m.x2 if with_x2 else None
    kernel_fn = ntk_zoo.ntk_fn(m.f, method="auto", vmap_axes=m.vmap_axes)
    problem = kernel_fn.problem(m.x1, x2, m.params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimated = _cost.cheapest(problem)
        traced = _cost.cheapest(problem, replay=True)
    assert traced.costs == estimated.costs
    assert traced.method == estimated.method
    assert (traced.replay is not None) == (traced.method is SD)


def test_fallback_warning_is_given_when_auto_runs_structured_derivatives(traces, monkeypatch):
    m = _model("cumsum-of-param")
    _force(monkeypatch, SD)
    kernel_fn = ntk_zoo.ntk_fn(m.f, method="auto", vmap_axes=m.vmap_axes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # estimating alone warns nothing and marks nothing
        kernel_fn.choose(m.x1, m.x2, m.params)
    assert _warnings._WARNED == set()
    with pytest.warns(UserWarning, match="no structure rule for the primitive `cumsum`"):
        got = kernel_fn(m.x1, m.x2, m.params)
    assert rel_error(got, oracle_ntk(m.f, m.x1, m.x2, m.params)) <= EXACT
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process
        kernel_fn(m.x2, m.x1, m.params)


def test_no_structured_warning_when_auto_runs_another_method(traces, monkeypatch):
    m = _model("cumsum-of-param")
    _force(monkeypatch, Method.JACOBIAN_CONTRACTION)
    kernel_fn = ntk_zoo.ntk_fn(m.f, method="auto", vmap_axes=m.vmap_axes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = kernel_fn(m.x1, m.x2, m.params)
    assert len(traces) == 1  # the estimate only
    assert _warnings._WARNED == set()  # a later structured_derivatives call still warns
    assert rel_error(got, oracle_ntk(m.f, m.x1, m.x2, m.params)) <= EXACT
