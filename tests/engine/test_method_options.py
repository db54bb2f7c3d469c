"""The methods' options (``StructuredOptions``, ``VectorProductOptions``): they reach the method
through the problem, they are part of the kernel function's jit cache key (a kernel function
whose options change compiles a new program, never reuses one traced with the old options),
every choice stays exact, and a bad value is an error naming the argument."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntk_zoo
from tests.cases import add_bias
from tests.oracle import oracle_ntk, rel_error

EXACT = 1e-10

S, V = ntk_zoo.StructuredOptions, ntk_zoo.VectorProductOptions
SD, VP = ("structured_derivatives", "structured"), ("ntk_vector_products", "vector_products")
# (method, keyword of ntk_fn, two options whose programs differ)
DIFFERENT = [
    (*SD, S(uses="structured"), S(uses="jacobian")),
    (*SD, S(grams="always"), S(grams="never")),
    (*VP, V(form="linearized"), V(form="transposed")),
    (*VP, V(blocks=1), V(blocks=2)),
    (*VP, V(basis_bytes=None), V(basis_bytes=1)),
]


def f(p, x):
    return jnp.tanh(add_bias(x @ p["w"], p["b"])) @ p["v"]


RNG = np.random.default_rng(0)
PARAMS = {
    "w": RNG.standard_normal((3, 8)) / 2,
    "b": RNG.standard_normal(8),
    "v": RNG.standard_normal((8, 2)) / 3,
}
X = RNG.standard_normal((4, 3))


def _ids(cases):
    return [f"{m}-{a}-{b}" for m, _, a, b in cases]


@pytest.mark.parametrize(("method", "keyword", "one", "other"), DIFFERENT, ids=_ids(DIFFERENT))
def test_different_options_give_different_programs(method, keyword, one, other):
    kernel_fn = ntk_zoo.ntk_fn(f, method=method, vmap_axes=0, trace_axes=(), **{keyword: one})
    forced = kernel_fn.replace(**{keyword: other})
    text = lambda k: jax.jit(k).lower(X, None, PARAMS).as_text()
    assert text(kernel_fn) != text(forced)
    want = oracle_ntk(f, X, None, PARAMS, trace_axes=())
    for k in (kernel_fn, forced):
        assert rel_error(k(X, None, PARAMS), want) <= EXACT
        assert k.problem(X, None, PARAMS).option(type(one)) == getattr(k, keyword)


@pytest.mark.parametrize(("method", "keyword", "one", "other"), DIFFERENT, ids=_ids(DIFFERENT))
def test_the_jit_cache_key_sees_the_options(method, keyword, one, other):
    # A kernel function traced with some options must not keep that program when its options
    # change (they were module globals once, read at trace time and unseen by the cache).
    kernel_fn = ntk_zoo.ntk_fn(f, method=method, vmap_axes=0, trace_axes=(), **{keyword: one})
    kernel_fn(X, None, PARAMS)
    assert kernel_fn._jitted._cache_size() == 1
    kernel_fn(X, None, PARAMS)
    assert kernel_fn._jitted._cache_size() == 1  # the same options: the same program
    setattr(kernel_fn, keyword, other)
    got = kernel_fn(X, None, PARAMS)
    assert kernel_fn._jitted._cache_size() == 2
    assert rel_error(got, oracle_ntk(f, X, None, PARAMS, trace_axes=())) <= EXACT


def test_options_default_to_the_automatic_choices():
    kernel_fn = ntk_zoo.ntk_fn(f)
    assert kernel_fn.structured == ntk_zoo.StructuredOptions(uses="auto", grams="auto")
    assert kernel_fn.vector_products == ntk_zoo.VectorProductOptions(None, None, None)
    problem = kernel_fn.problem(X, None, PARAMS)
    assert problem.option(ntk_zoo.StructuredOptions) == ntk_zoo.StructuredOptions()
    assert kernel_fn.replace(structured=None).structured == ntk_zoo.StructuredOptions()


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: ntk_zoo.StructuredOptions(uses="dense"), "`uses`"),
        (lambda: ntk_zoo.StructuredOptions(grams="sometimes"), "`grams`"),
        (lambda: ntk_zoo.VectorProductOptions(form="forward"), "`form`"),
        (lambda: ntk_zoo.VectorProductOptions(blocks=0), "`blocks`"),
        (lambda: ntk_zoo.VectorProductOptions(blocks=2.0), "`blocks`"),
        (lambda: ntk_zoo.VectorProductOptions(blocks=True), "`blocks`"),
        (lambda: ntk_zoo.VectorProductOptions(basis_bytes=-1), "`basis_bytes`"),
    ],
    ids=["uses", "grams", "form", "blocks-0", "blocks-float", "blocks-bool", "basis_bytes"],
)
def test_a_bad_option_value_names_the_argument(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


def test_an_option_of_the_wrong_type_names_the_keyword():
    with pytest.raises(TypeError, match=r"ntk_fn\(structured=\.\.\.\) takes an ntk_zoo\."):
        ntk_zoo.ntk_fn(f, structured="jacobian")
    with pytest.raises(TypeError, match=r"vector_products=\.\.\.\) takes an ntk_zoo\.Vector"):
        ntk_zoo.ntk_fn(f, vector_products=ntk_zoo.StructuredOptions())
    with pytest.raises(TypeError, match=r"KernelFn.replace\(structured=\.\.\.\)"):
        ntk_zoo.ntk_fn(f).replace(structured=ntk_zoo.VectorProductOptions())


def test_output_chunk_keeps_the_options(monkeypatch):
    seen = []
    real = ntk_zoo.parallel._chunked.ntk_fn

    def spy(*args, **kwargs):
        seen.append((kwargs.get("structured"), kwargs.get("vector_products")))
        return real(*args, **kwargs)

    monkeypatch.setattr(ntk_zoo.parallel._chunked, "ntk_fn", spy)
    options = ntk_zoo.StructuredOptions(uses="jacobian")
    kernel_fn = ntk_zoo.ntk_fn(
        f, method="structured_derivatives", vmap_axes=0, trace_axes=(), structured=options
    )
    got = ntk_zoo.batched(kernel_fn, batch_size=2, output_chunk=1)(X, None, PARAMS)
    assert seen and all(s == options for s, _ in seen)
    assert rel_error(got, oracle_ntk(f, X, None, PARAMS, trace_axes=())) <= EXACT
