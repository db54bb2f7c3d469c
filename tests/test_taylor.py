"""taylor_expand against hand-derived series (float64)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntk_zoo
from tests.oracle import rel_error


def cubic(p, x):
    """A polynomial of degree 3 in the params, with pytree params and outputs."""
    a, b = p["a"], p["b"]
    return {"y": (a**3) * x + a * b[0] * b[1], "z": [b * jnp.sum(x) + a**2]}


P0 = {"a": jnp.asarray(0.7), "b": jnp.asarray([1.5, -0.4])}
P1 = {"a": jnp.asarray(-0.2), "b": jnp.asarray([0.3, 0.9])}
X = jnp.asarray([1.0, -2.0, 0.5])


def test_degree_3_is_exact_for_a_cubic():
    f3 = ntk_zoo.taylor_expand(cubic, P0, 3)
    assert rel_error(f3(P1, X), cubic(P1, X)) < 1e-14
    assert jax.tree.structure(f3(P1, X)) == jax.tree.structure(cubic(P1, X))


def test_degree_2_misses_exactly_the_cubic_term():
    # y's cubic monomials a³x and a·b0·b1 leave δa³·x + δa·δb0·δb1 (their third-order terms).
    f2 = ntk_zoo.taylor_expand(cubic, P0, 2)
    da, db = P1["a"] - P0["a"], P1["b"] - P0["b"]
    got = f2(P1, X)
    want = cubic(P1, X)
    np.testing.assert_allclose(want["y"] - got["y"], da**3 * X + da * db[0] * db[1], rtol=1e-12)
    assert rel_error(got["z"], want["z"]) < 1e-14  # z is quadratic: exact at degree 2


def test_degree_1_is_linearize_and_degree_0_is_constant():
    f1 = ntk_zoo.taylor_expand(cubic, P0, 1)
    assert rel_error(f1(P1, X), ntk_zoo.linearize(cubic, P0)(P1, X)) < 1e-14
    f0 = ntk_zoo.taylor_expand(cubic, P0, 0)
    assert rel_error(f0(P1, X), cubic(P0, X)) == 0.0


@pytest.mark.parametrize("degree", [1, 2, 4, 5])
def test_series_of_sine(degree):
    # f(p) = sin(p·x): D^k f[δ^k] = x^k δ^k sin^{(k)}(p0 x), sin^{(k)}(u) = sin(u + kπ/2).
    f = lambda p, x: jnp.sin(p * x)
    p0, p1 = jnp.asarray(0.3), jnp.asarray(0.55)
    want = sum(
        (X * (p1 - p0)) ** k * np.sin(p0 * X + k * np.pi / 2) / math.factorial(k)
        for k in range(degree + 1)
    )
    got = ntk_zoo.taylor_expand(f, p0, degree)(p1, X)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_pure_fn_and_errors():
    pure = ntk_zoo.taylor_expand(ntk_zoo.PureFn(cubic, P0), degree=3)
    assert isinstance(pure, ntk_zoo.PureFn) and pure.params is P0
    assert rel_error(pure.apply(P1, X), cubic(P1, X)) < 1e-14
    with pytest.raises(ValueError, match="degree"):
        ntk_zoo.taylor_expand(cubic, P0, -1)
    with pytest.raises(TypeError, match="params"):
        ntk_zoo.taylor_expand(cubic, None, 2)
    with pytest.raises(ValueError, match="structure"):
        ntk_zoo.taylor_expand(cubic, P0, 2)({"a": P1["a"]}, X)
