"""NTK-vector products' forced paths against the float64 oracle: both JVP forms, the chunked
basis and the symmetric blocks of ``x2=None``.

The method picks one form per problem, computes all columns in one ``vmap`` when they fit and
splits a symmetric kernel into blocks only with the linearized form; these tests force each form,
a chunk of one column (``lax.map`` over every column) and 2 or 3 blocks on every case of
tests/cases.py, so every path is exact wherever it could run.
"""

import jax.numpy as jnp
import numpy as np
import pytest

import ntk_zoo
from ntk_zoo.methods import _ntk_vector_products as vp
from tests.cases import CASE_IDS, CASES
from tests.oracle import oracle_ntk, rel_error

EXACT = 1e-10


@pytest.mark.parametrize("vmap", [False, True], ids=["full", "vmap"])
@pytest.mark.parametrize("form", ["linearized", "transposed"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forced_form_one_column_per_chunk_matches_oracle(case, form, vmap):
    kernel_fn = ntk_zoo.ntk_fn(
        case.f,
        method="ntk_vector_products",
        vmap_axes=case.vmap_axes if vmap else None,
        trace_axes=case.trace_axes,
        # basis_bytes=1: one column per lax.map step
        vector_products=ntk_zoo.VectorProductOptions(form=form, basis_bytes=1),
    )
    got = kernel_fn(case.x1, case.x2, case.params, **case.kwargs(False))
    want = oracle_ntk(
        case.f, case.x1, case.x2, case.params, trace_axes=case.trace_axes, **case.kwargs(False)
    )
    assert rel_error(got, want) <= EXACT


@pytest.mark.parametrize("vmap", [False, True], ids=["full", "vmap"])
@pytest.mark.parametrize("form", ["linearized", "transposed"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_vjps_at_once_jvps_one_per_chunk_matches_oracle(case, form, vmap, monkeypatch):
    """Every column's VJP in one ``vmap``, then the JVPs one column per ``lax.map`` step (the
    path taken when the VJP results fit half the budget but the JVP tangents do not)."""
    monkeypatch.setattr(vp, "_jvp_chunk", lambda plan, size: 1)
    kernel_fn = ntk_zoo.ntk_fn(
        case.f,
        method="ntk_vector_products",
        vmap_axes=case.vmap_axes if vmap else None,
        trace_axes=case.trace_axes,
        vector_products=ntk_zoo.VectorProductOptions(form=form),
    )
    got = kernel_fn(case.x1, case.x2, case.params, **case.kwargs(False))
    want = oracle_ntk(
        case.f, case.x1, case.x2, case.params, trace_axes=case.trace_axes, **case.kwargs(False)
    )
    assert rel_error(got, want) <= EXACT


def test_jvp_chunk_takes_the_vjps_out_of_the_loop_only_when_they_fit_half_the_budget():
    plan = lambda chunk, vjp, jvp: vp._Plan("linearized", chunk, vjp, jvp, 1000.0)
    assert vp._jvp_chunk(plan(10, 10.0, 90.0), 10) is None  # all columns fit: one vmap
    assert vp._jvp_chunk(plan(2, 10.0, 400.0), 10) == 2  # (1000 - 10·10) // 400
    assert vp._jvp_chunk(plan(2, 10.0, 2000.0), 10) == 1  # at least one column
    assert vp._jvp_chunk(plan(1, 60.0, 400.0), 10) is None  # VJPs over half: both chunked


def test_default_plan_of_a_chunked_convnet_computes_its_vjps_at_once():
    """The convnet of tests/cases.py (2 outputs) with a budget of one column: its VJP results are
    small against its JVP tangents (activations dominate), so both columns' VJPs are computed
    before the loop, and only the JVPs go one per step."""
    case = {c.name: c for c in CASES}["convnet"]
    probe = ntk_zoo.ntk_fn(case.f, vmap_axes=0).problem(case.x1, case.x2, case.params)
    plan = vp._plan(probe, True, paired=False)
    assert plan.jvp_bytes >= 3 * plan.vjp_bytes
    options = ntk_zoo.VectorProductOptions(basis_bytes=int(plan.vjp_bytes + plan.jvp_bytes))
    problem = ntk_zoo.ntk_fn(case.f, vmap_axes=0, vector_products=options).problem(
        case.x1, case.x2, case.params
    )
    plan = vp._plan(problem, True, paired=False)
    size = int(np.prod(problem.fx2.shape[1:]))
    assert (plan.chunk, size) == (1, 2)
    assert vp._jvp_chunk(plan, size) == 1


@pytest.mark.parametrize("blocks", [3])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_symmetric_blocks_match_oracle(case, blocks):
    """``x2=None`` from the blocks on and above the diagonal (3 examples: padded blocks; the
    default of 2 blocks runs wherever the exactness tests take this form with ``x2=None``)."""
    kernel_fn = ntk_zoo.ntk_fn(
        case.f,
        method="ntk_vector_products",
        vmap_axes=case.vmap_axes,
        trace_axes=(),
        vector_products=ntk_zoo.VectorProductOptions(blocks=blocks),
    )
    got = kernel_fn(case.x1, None, case.params, **case.kwargs(True))
    want = oracle_ntk(case.f, case.x1, None, case.params, trace_axes=(), **case.kwargs(True))
    assert rel_error(got, want) <= EXACT


@pytest.mark.parametrize("form", ["linearized", "transposed"])
def test_forced_form_x2_none_and_per_param_leaves(form):
    """``x2=None`` shares one forward pass; ``sum_params=False`` chunks per param leaf."""
    case = CASES[0]
    options = ntk_zoo.VectorProductOptions(form=form, blocks=2, basis_bytes=1)
    vp_fn = lambda **kw: ntk_zoo.ntk_fn(
        case.f, method="ntk_vector_products", vector_products=options, **kw
    )
    for vmap_axes in (None, case.vmap_axes):
        got = vp_fn(vmap_axes=vmap_axes)(case.x1, None, case.params)
        assert rel_error(got, oracle_ntk(case.f, case.x1, None, case.params)) <= EXACT
    got = vp_fn(vmap_axes=0, trace_axes=(), sum_params=False)(case.x1, None, case.params)
    want = oracle_ntk(case.f, case.x1, None, case.params, trace_axes=(), sum_params=False)
    assert rel_error(got, want) <= EXACT


@pytest.mark.parametrize("size", [1, 5, 6])
@pytest.mark.parametrize("chunk", [1, 2, 4, 7])
def test_map_columns_every_chunking_stacks_each_column_once(size, chunk):
    column = lambda j: jnp.stack([j, 10 * j]).astype(jnp.float64)
    got = vp._map_columns(column, size, chunk)
    np.testing.assert_array_equal(got, np.stack([np.arange(size), 10 * np.arange(size)], 1))


def test_chunk_bound_from_basis_bytes():
    """A chunk holds at most ``basis_bytes`` (default ``BASIS_BYTES``) of VJP results and JVP
    tangents, and never 0 columns."""
    case = CASES[0]

    def problem(basis_bytes=None):
        options = ntk_zoo.VectorProductOptions(basis_bytes=basis_bytes)
        kernel_fn = ntk_zoo.ntk_fn(case.f, vmap_axes=0, vector_products=options)
        return kernel_fn.problem(case.x1, case.x2, case.params)

    c = ntk_zoo.core.count(problem())
    per_column = c.itemsize * (c.n2 * c.n_params + c.n1 * c.n2 * c.y1 / c.n1)
    assert vp._plan(problem(), True, paired=False).chunk == int(vp.BASIS_BYTES // per_column)
    assert vp._plan(problem(int(2.5 * per_column)), True, paired=False).chunk == 2
    assert vp._plan(problem(1), True, paired=False).chunk == 1


def test_chunk_of_a_symmetric_kernel_counts_one_block():
    """With ``x2=None`` split into ``k`` blocks of ``m``, each block program holds ``m``
    examples' VJP results and ``m·m`` pairs' tangents, not those of all ``n·n`` pairs: the chunk
    is sized for one block (sizing it for all pairs split the conv net's 100 columns into a
    ``lax.map`` that ran 3-4x slower on XLA:CPU)."""
    case = {c.name: c for c in CASES}["convnet"]
    x = jnp.concatenate([case.x1, case.x2, case.x1, case.x2])  # 10 examples
    options = ntk_zoo.VectorProductOptions(form="linearized", blocks=2)
    kernel_fn = ntk_zoo.ntk_fn(case.f, vmap_axes=0, vector_products=options)
    problem = kernel_fn.problem(x, None, case.params)
    c = ntk_zoo.core.count(problem)
    k, m = vp._symmetric_blocks(problem, "linearized")
    assert (k, m) == (2, 5)
    per_column = c.itemsize * (m * c.n_params + m * m * c.y1 / c.n1)
    assert vp._plan(problem, True, paired=False).chunk == int(vp.BASIS_BYTES // per_column)
    # the same problem without blocks: all n·n pairs in one program
    whole = ntk_zoo.VectorProductOptions(form="linearized", blocks=1)
    kernel_fn = ntk_zoo.ntk_fn(case.f, vmap_axes=0, vector_products=whole)
    per_column = c.itemsize * (c.n1 * c.n_params + c.n1 * c.n1 * c.y1 / c.n1)
    plan = vp._plan(kernel_fn.problem(x, None, case.params), True, paired=False)
    assert plan.chunk == int(vp.BASIS_BYTES // per_column)


def test_form_follows_params_against_activations():
    """An MLP (params outnumber a forward pass's values) takes the transposed JVP; a convnet
    (activations dominate) the linearized one."""
    by_name = {c.name: c for c in CASES}
    for name, form in (("mlp", "transposed"), ("convnet", "linearized")):
        case = by_name[name]
        problem = ntk_zoo.ntk_fn(case.f, vmap_axes=0).problem(case.x1, case.x2, case.params)
        assert vp._plan(problem, True, paired=False).form == form


def test_symmetric_blocks_only_for_x2_none_with_the_linearized_form():
    by_name = {c.name: c for c in CASES}
    conv, mlp = by_name["convnet"], by_name["mlp"]
    problem = lambda c, x2: ntk_zoo.ntk_fn(c.f, vmap_axes=0).problem(c.x1, x2, c.params)
    assert vp._symmetric_blocks(problem(conv, None), "linearized") == (2, 1)  # 2 examples
    assert vp._symmetric_blocks(problem(conv, conv.x2), "linearized") == (1, 2)
    assert vp._symmetric_blocks(problem(mlp, None), "transposed") == (1, 3)
