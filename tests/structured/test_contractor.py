"""How the running contractor carries out an einsum of structured derivatives: pairwise along
its planned path, each pair as one batched matrix product over ``(batch, free, contracted)``
layouts with the contracted axes minor on both sides (``_contractor.pair_product``), so that
XLA:CPU does not copy the right operand into a transposed layout, and a factor contracted with
itself (``x2=None``) is laid out once. Exact against ``numpy.einsum`` for every kind of label
(batch, free, contracted, summed in one operand only, a diagonal within one operand)."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntk_zoo
from ntk_zoo.structured import _contractor
from ntk_zoo.structured._contractor import RUNNING, Einsum, pair_product, run_path
from tests.cases import CASE_IDS, CASES, zoo_case
from tests.oracle import oracle_ntk, rel_error

# (labels of a, labels of b, kept labels): the shapes come from SIZES
PAIRS = (
    ((0, 1, 2, 3), (4, 5, 2, 3), (0, 1, 4, 5)),  # a dense factor's Gram: two contracted axes
    ((0, 1, 2), (0, 3, 2), (0, 1, 3)),  # a batch axis (traced / diagonal outputs)
    ((0, 1, 2, 6), (3, 2), (0, 1, 3)),  # 6: in `a` only and not kept, summed first
    ((0, 1), (2, 3), (0, 1, 2, 3)),  # nothing contracted: an outer product
    ((0, 1), (0, 1), ()),  # everything contracted: a scalar
    ((0, 1, 1), (1, 2), (0, 2)),  # a diagonal within `a`: the einsum itself
)
SIZES = {0: 2, 1: 3, 2: 4, 3: 5, 4: 3, 5: 2, 6: 3}


def _array(labels, seed):
    shape = [SIZES[x] for x in labels]
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape))


@pytest.mark.parametrize("la, lb, keep", PAIRS)
def test_pair_product_equals_einsum(la, lb, keep):
    a, b = _array(la, 0), _array(lb, 1)
    got, labels = pair_product(a, list(la), b, list(lb), set(keep))
    assert sorted(labels) == sorted(keep)
    want = np.einsum(np.asarray(a), list(la), np.asarray(b), list(lb), list(labels))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-12)


def test_run_path_equals_einsum_on_three_operands():
    subs = [(0, 1, 2), (2, 3), (3, 4)]
    ops = [(_array(s, k), list(s)) for k, s in enumerate(subs)]
    got = run_path(ops, [4, 0, 1], [(1, 2), (0, 1)])
    want = np.einsum(*[x for a, s in ops for x in (np.asarray(a), s)], [4, 0, 1])
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-12)


def _dots(fn, *args):
    jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
    return jaxpr, [e for e in jaxpr.eqns if e.primitive.name == "dot_general"]


def test_a_product_over_several_axes_is_one_matrix_product_over_the_last():
    # J[n, o, w1, w2] J[m, p, w1, w2]: jnp.einsum would give XLA a dot_general over two axes
    # of rank-4 operands, which XLA:CPU canonicalises by copying the right one transposed
    j1, j2 = _array((0, 1, 2, 3), 0), _array((4, 5, 2, 3), 1)
    einsum = Einsum([(j1, [0, 1, 2, 3]), (j2, [4, 5, 2, 3])], [0, 4, 1, 5], (1, 2))
    _, dots = _dots(
        lambda a, b: RUNNING.contract(
            einsum._replace(operands=[(a, [0, 1, 2, 3]), (b, [4, 5, 2, 3])])
        ),
        j1,
        j2,
    )
    assert len(dots) == 1
    (contract, batch) = dots[0].params["dimension_numbers"]
    assert contract == ((2,), (2,)) and batch == ((0,), (0,))
    assert [v.aval.ndim for v in dots[0].invars] == [3, 3]


def _source(jaxpr, var):
    """The input ``var`` is computed from through layout ops, and those ops' (name, params)."""
    producers = {v: e for e in jaxpr.eqns for v in e.outvars}
    chain = []
    while var in producers and producers[var].primitive.name in ("transpose", "reshape"):
        eqn = producers[var]
        chain.append(
            (eqn.primitive.name, tuple(sorted((k, str(p)) for k, p in eqn.params.items())))
        )
        var = eqn.invars[0]
    return var, chain


def test_a_factor_times_itself_is_laid_out_once():
    # x2=None: both sides are the same array; their layouts are the same ops on it (XLA computes
    # them once), whatever the order of the output's labels, and the product contracts the last
    # axis of both (A Aᵀ: XLA:CPU copies neither)
    j = _array((0, 1, 2, 3), 0)
    for out in ([0, 4, 1, 5], [4, 5, 0, 1]):

        def gram(a, out=out):
            return RUNNING.contract(Einsum([(a, [0, 1, 2, 3]), (a, [4, 5, 2, 3])], out, (1, 2)))

        jaxpr, dots = _dots(gram, j)
        assert len(dots) == 1
        assert dots[0].params["dimension_numbers"] == (((2,), (2,)), ((0,), (0,)))
        left, right = (_source(jaxpr, v) for v in dots[0].invars)
        assert left == right


def test_a_large_kernel_block_is_left_to_einsum(monkeypatch):
    # above LAYOUT_OUT values the einsum goes to jnp.einsum whole (XLA lays it out), same values
    j = _array((0, 1, 2, 3), 0)

    def gram(a):
        return RUNNING.contract(
            Einsum([(a, [0, 1, 2, 3]), (a, [4, 5, 2, 3])], [0, 4, 1, 5], (1, 2))
        )

    small = gram(j)
    monkeypatch.setattr(_contractor, "LAYOUT_OUT", 0)
    _, dots = _dots(gram, j)
    assert [v.aval.ndim for v in dots[0].invars] == [4, 4]
    np.testing.assert_allclose(np.asarray(gram(j)), np.asarray(small), rtol=1e-12)


@pytest.mark.parametrize("swapped", [False, True])
def test_the_operand_with_many_more_free_values_is_the_left_one(swapped):
    # XLA:CPU runs a batched A·Bᵀ (contracted axis minor on both sides) 1.6-9x slower when A
    # has 2-8x fewer rows than B (WRN-16-4's conv Grams: 10 logits against 80 rows, see
    # ARCHITECTURE.md), so the much wider operand goes on the left whichever way the path has them
    few, many = _array((0, 1, 2), 0), _array((0, 3, 5, 2), 1)  # free: 3 values against 10
    pairs = [(few, [0, 1, 2]), (many, [0, 3, 5, 2])]
    (a, la), (b, lb) = pairs[::-1] if swapped else pairs
    _, dots = _dots(lambda a, b: pair_product(a, la, b, lb, {0, 1, 3, 5})[0], a, b)
    assert len(dots) == 1
    assert dots[0].params["dimension_numbers"] == (((2,), (2,)), ((0,), (0,)))
    assert [v.aval.shape for v in dots[0].invars] == [(2, 10, 4), (2, 3, 4)]
    got, labels = pair_product(a, la, b, lb, {0, 1, 3, 5})
    assert labels == [0, 3, 5, 1]
    want = np.einsum(np.asarray(a), la, np.asarray(b), lb, labels)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-12)


def test_near_a_tie_the_path_order_stays():
    # 3 rows against 5 (under SWAP_ROWS = 2x): swapping gains nothing there and would reorder
    # the result's labels, costing a copy in the next product (the conv cell's factor Gram)
    a, b = _array((0, 1, 2), 0), _array((0, 3, 2), 1)
    _, dots = _dots(lambda a, b: pair_product(a, [0, 1, 2], b, [0, 3, 2], {0, 1, 3})[0], a, b)
    assert [v.aval.shape for v in dots[0].invars] == [(2, 3, 4), (2, 5, 4)]
    assert pair_product(a, [0, 1, 2], b, [0, 3, 2], {0, 1, 3})[1] == [0, 1, 3]


def _symmetric_operands(n=3):
    # K-first contraction of a token-shared leaf, x2=None: X X'ᵀ over channels, then with side
    # 2's cotangents, then side 1's; labels n=0, t=1, c=2, m=3, s=4, o=5, e=6, q=7
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((n, 4, 5)))
    g = jnp.asarray(rng.standard_normal((n, 2, 4, 3)))
    ops = [(x, [0, 1, 2]), (x, [3, 4, 2]), (g, [0, 5, 1, 6]), (g, [3, 7, 4, 6])]
    return ops, [0, 5, 3, 7], [(0, 1), (1, 2), (0, 1)]


def test_a_symmetric_einsum_runs_on_the_example_pairs():
    # x2=None, a use paired with itself: after the step that first combines the two sides
    # (X X'ᵀ, whole), the steps run on the pairs n ≤ n' (one batch axis of 3·4/2 = 6), and the
    # pairs n > n' are the mirror image: the same values as the whole einsum
    ops, out, path = _symmetric_operands()
    want = np.einsum(*[x for a, s in ops for x in (np.asarray(a), s)], out)
    mirror = ((0, 3), (5, 7))
    got = run_path(ops, out, path, mirror)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(run_path(ops, out, path)), want, rtol=1e-12)
    _, dots = _dots(
        lambda *a: run_path([(b, s) for b, (_, s) in zip(a, ops)], out, path, mirror),
        *[a for a, _ in ops],
    )
    batches = [e.invars[0].aval.shape[0] for e in dots]
    assert batches[0] != 6 and batches[1:] == [6, 6], batches


def test_the_contraction_uses_the_example_pairs_where_the_einsum_is_large(monkeypatch):
    # a use paired with itself (x2=None, examples a free axis) is marked symmetric; the running
    # contractor computes it on the pairs when its estimated time reaches PAIRS_MIN_S and the
    # pairs take PAIRS_MIN_SAVING of its multiply-adds away
    calls = []
    run = _contractor.run_path
    monkeypatch.setattr(_contractor, "run_path", lambda *a: calls.append(a[3]) or run(*a))
    ops, out, path = _symmetric_operands()
    einsum = Einsum(ops, out, (1, 2, 1, 2), ((0, 3), (5, 7)))
    monkeypatch.setattr(_contractor, "plan", lambda *a, **k: (path, 1.0))  # K first, 1 s
    monkeypatch.setattr(_contractor, "PAIRS_MIN_S", float("inf"))
    RUNNING.contract(einsum)
    monkeypatch.setattr(_contractor, "PAIRS_MIN_S", 0.5)
    RUNNING.contract(einsum)
    monkeypatch.setattr(_contractor, "PAIRS_MIN_SAVING", 0.9)  # the pairs save 1/3: too little
    RUNNING.contract(einsum)
    assert calls == [None, ((0, 3), (5, 7)), None]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_cases_exact_on_the_example_pairs(case, monkeypatch):
    # Every symmetric einsum on the pairs (no bound on its time or saving), x2=None, structure
    # kept where it can be: the kernel is the oracle's, full, traced and with the last output
    # axis diagonal; without a diagonal the pairs ran
    monkeypatch.setattr(_contractor, "PAIRS_MIN_S", 0.0)
    monkeypatch.setattr(_contractor, "PAIRS_MIN_SAVING", -1.0)
    scattered = []
    scatter = _contractor._Pairs.scatter
    monkeypatch.setattr(
        _contractor._Pairs, "scatter", lambda self, *a: scattered.append(1) or scatter(self, *a)
    )
    options = ntk_zoo.StructuredOptions(uses="structured", grams="always")
    axes = {((), ()), (tuple(case.trace_axes), ()), ((), (-1,))}
    for trace_axes, diagonal_axes in sorted(axes):
        del scattered[:]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fallbacks warn; tested in test_grid
            kernel_fn = ntk_zoo.ntk_fn(
                case.f,
                method="structured_derivatives",
                structured=options,
                vmap_axes=case.vmap_axes,
                trace_axes=trace_axes,
                diagonal_axes=diagonal_axes,
            )
            got = kernel_fn(case.x1, None, case.params, **case.kwargs(True))
        want = oracle_ntk(
            case.f,
            case.x1,
            None,
            case.params,
            trace_axes=trace_axes,
            diagonal_axes=diagonal_axes,
            **case.kwargs(True),
        )
        assert rel_error(got, want) <= 1e-10, (trace_axes, diagonal_axes)
        assert scattered or diagonal_axes, trace_axes


def test_a_zoo_model_uses_the_example_pairs(monkeypatch):
    # the tiny WideResNet and ViT (x2=None, full blocks): their uses paired with themselves go
    # through the pairs, and the kernel is the oracle's
    scatters = []
    scatter = _contractor._Pairs.scatter
    monkeypatch.setattr(
        _contractor._Pairs, "scatter", lambda self, *a: scatters.append(1) or scatter(self, *a)
    )
    monkeypatch.setattr(_contractor, "PAIRS_MIN_S", 0.0)
    monkeypatch.setattr(_contractor, "PAIRS_MIN_SAVING", -1.0)
    for name in ("wrn-linen", "vit-linen"):
        case = zoo_case(name)
        scatters.clear()
        kernel_fn = ntk_zoo.ntk_fn(
            case.f, method="structured_derivatives", vmap_axes=0, trace_axes=()
        )
        got = kernel_fn(case.x1, None, case.params)
        assert scatters, name
        want = oracle_ntk(case.f, case.x1, None, case.params, trace_axes=())
        assert rel_error(got, want) <= 1e-10, name
