"""ntk_fn dispatches through one registry of methods, each declaring its compute and its cost."""

import jax.numpy as jnp

import ntk_zoo
from ntk_zoo.core import NtkMethod, Problem
from ntk_zoo.engine import METHODS


def f(params, x):
    return jnp.tanh(x @ params["w"]) @ params["v"]


PARAMS = {"w": jnp.ones((5, 3)) / 5, "v": jnp.ones((3, 2)) / 3}
X = jnp.arange(20.0).reshape(4, 5) / 20


def test_every_method_but_auto_is_registered_in_order():
    assert list(METHODS) == [m for m in ntk_zoo.Method if m is not ntk_zoo.Method.AUTO]
    for method, spec in METHODS.items():
        assert isinstance(spec, NtkMethod) and spec.name == method.value


def test_choose_reports_every_registered_cost_and_picks_the_least():
    method, costs = ntk_zoo.ntk_fn(f, vmap_axes=0).choose(X, None, PARAMS)
    assert list(costs) == [m.value for m in METHODS]
    assert all(c > 0 for c in costs.values())
    assert costs[method.value] == min(costs.values())


def test_kernel_fn_problem_is_the_public_description():
    kernel_fn = ntk_zoo.ntk_fn(f, vmap_axes=0, trace_axes=())
    problem = kernel_fn.problem(X, X[:2], PARAMS)
    assert isinstance(problem, Problem)
    assert problem.vmap.batch_size == 4 and problem.vmap.out_axes == [0]
    assert problem.axes[0].free == (0, 1) and problem.x2 is not None
    pure = ntk_zoo.PureFn(f, PARAMS)
    assert ntk_zoo.ntk_fn(pure).problem(X).params is PARAMS
