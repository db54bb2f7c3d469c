"""Every method against the float64 dense-Jacobian oracle, on every case of tests/cases.py."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntk_zoo
from tests.cases import CASE_IDS, CASES
from tests.oracle import oracle_ntk, oracle_vp, rel_error

METHODS = ["jacobian_contraction", "ntk_vector_products", "structured_derivatives", "auto"]
EXACT = 1e-10  # float64 against float64: only rounding separates the methods
RUNNABLE = set(METHODS) - {"auto"}  # what auto may pick


_KERNELS: dict = {}  # one computation per (case, method, settings), shared by the tests


def _kernel(case, method, *, vmap, same, jit, **kw):
    dtype = jax.tree.leaves(case.params)[0].dtype
    key = (case.name, str(dtype), method, vmap, same, jit, tuple(sorted(kw.items())))
    if key not in _KERNELS:
        _KERNELS[key] = _compute_kernel(case, method, vmap=vmap, same=same, jit=jit, **kw)
    return _KERNELS[key]


def _compute_kernel(case, method, *, vmap, same, jit, **kw):
    kernel_fn = ntk_zoo.ntk_fn(
        case.f, method=method, vmap_axes=case.vmap_axes if vmap else None, **kw
    )
    if method == "auto":  # what auto would pick is one of the methods, each estimate finite
        picked, costs = kernel_fn.choose(
            case.x1, None if same else case.x2, case.params, **case.kwargs(same)
        )
        assert picked in RUNNABLE
        assert all(np.isfinite(c) and c >= 0 for c in costs.values())
    if jit:
        kernel_fn = jax.jit(kernel_fn)
    return kernel_fn(case.x1, None if same else case.x2, case.params, **case.kwargs(same))


# Called on concrete arrays, kernel_fn runs its own compiled program; the tests below call it
# under the user's jax.jit (the traced path) on every case and method: the same program, so it is
# not compiled twice here.
@pytest.mark.parametrize("same", [True, False], ids=["x2=None", "x2"])
@pytest.mark.parametrize("vmap", [False, True], ids=["full", "vmap"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_matches_oracle(case, method, vmap, same):
    got = _kernel(case, method, vmap=vmap, same=same, jit=False, trace_axes=case.trace_axes)
    want = oracle_ntk(
        case.f,
        case.x1,
        None if same else case.x2,
        case.params,
        trace_axes=case.trace_axes,
        **case.kwargs(same),
    )
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert rel_error(got, want) <= EXACT


@pytest.mark.parametrize("vmap", [False, True], ids=["full", "vmap"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_full_kernel_match_oracle(case, method, vmap):
    got = _kernel(case, method, vmap=vmap, same=False, jit=True, trace_axes=())
    want = oracle_ntk(case.f, case.x1, case.x2, case.params, trace_axes=(), **case.kwargs(False))
    assert rel_error(got, want) <= EXACT


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_sum_params_false_leaves_match_per_leaf_oracle(case, method):
    got = _kernel(case, method, vmap=True, same=False, jit=True, trace_axes=(), sum_params=False)
    want = oracle_ntk(
        case.f, case.x1, case.x2, case.params, trace_axes=(), sum_params=False, **case.kwargs(False)
    )
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert rel_error(got, want) <= EXACT
    # The leaves of each output's param-tree sum to that output's kernel.
    total = _kernel(case, method, vmap=True, same=False, jit=True, trace_axes=())
    out_def = jax.tree.structure(total)
    for per_param, k in zip(out_def.flatten_up_to(got), jax.tree.leaves(total)):
        assert rel_error(sum(jax.tree.leaves(per_param)), k) <= EXACT


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_float32_close_to_float64(case, method):
    case32 = case.cast(jnp.float32)
    got = _kernel(case32, method, vmap=True, same=False, jit=True, trace_axes=case.trace_axes)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(got))
    want = oracle_ntk(
        case.f, case.x1, case.x2, case.params, trace_axes=case.trace_axes, **case.kwargs(False)
    )
    assert rel_error(got, want) <= 1e-4  # float32 rounding through a few layers


def _conv4d():
    return next(c for c in CASES if c.name == "conv4d")


TRACE = [(), (0,), (-1,), (2,), (1, 3), (3, 1), (-1, 0), (-2, 1), (0, 1, 2, 3)]
DIAGONAL = [(), (0,), (-1,), (1,), (0, 2), (2, 0), (-4, -1), (1, 2, 3)]
AXES = [
    (t, d)
    for t, d in itertools.product(TRACE, DIAGONAL)
    if not {a % 4 for a in t} & {a % 4 for a in d}
]


# A method's combinations on one xdist worker: they share one computation (_kernels_on_4d_outputs).
@pytest.mark.parametrize("vmap", [False, True], ids=["full", "vmap"])
@pytest.mark.parametrize(
    "method",
    [
        pytest.param(m, marks=pytest.mark.xdist_group(f"4d-axes-{m}"))
        for m in ("jacobian_contraction", "ntk_vector_products", "structured_derivatives")
    ],
)
@pytest.mark.parametrize("trace_axes,diagonal_axes", AXES, ids=[f"t{t}-d{d}" for t, d in AXES])
def test_trace_and_diagonal_axes_on_4d_outputs(trace_axes, diagonal_axes, method, vmap):
    _assert_exact_on_4d_outputs(method, vmap, trace_axes, diagonal_axes, together=True)


def _kernels_on_4d_outputs(method, vmap):
    """The kernels of every combination of AXES, under one user's ``jax.jit`` (the traced path,
    as ``_kernel(..., jit=True)``): one compile instead of one per combination (the programs
    share their Jacobians or factors; a third of the time of compiling them one by one)."""
    key = ("conv4d", method, vmap, "every AXES")
    if key not in _KERNELS:
        case = _conv4d()
        fns = [
            ntk_zoo.ntk_fn(
                case.f,
                method=method,
                vmap_axes=case.vmap_axes if vmap else None,
                trace_axes=t,
                diagonal_axes=d,
            )
            for t, d in AXES
        ]
        together = jax.jit(lambda x1, x2, params: [fn(x1, x2, params) for fn in fns])
        _KERNELS[key] = dict(zip(AXES, together(case.x1, case.x2, case.params)))
    return _KERNELS[key]


def _assert_exact_on_4d_outputs(method, vmap, trace_axes, diagonal_axes, together=False):
    case = _conv4d()
    axes = {"trace_axes": trace_axes, "diagonal_axes": diagonal_axes}
    if together:  # each combination's own kernel, computed beside the others
        got = _kernels_on_4d_outputs(method, vmap)[trace_axes, diagonal_axes]
    else:
        got = _kernel(case, method, vmap=vmap, same=False, jit=True, **axes)
    want = oracle_ntk(case.f, case.x1, case.x2, case.params, **axes)
    assert got.shape == want.shape
    assert rel_error(got, want) <= EXACT


# The combinations whose estimate once indexed the interleaved kernel shape by output axis
# (IndexError), with several traced axes beside diagonal ones: auto computes them exactly.
AUTO_AXES = [((0, 1), (3,)), ((0, 2), (3,)), ((1, 2), (3,)), ((1, 2), (0, 3))]


@pytest.mark.parametrize(
    "trace_axes,diagonal_axes", AUTO_AXES, ids=[f"t{t}-d{d}" for t, d in AUTO_AXES]
)
def test_auto_on_4d_outputs(trace_axes, diagonal_axes):
    _assert_exact_on_4d_outputs("auto", True, trace_axes, diagonal_axes)


@pytest.mark.parametrize("vmap", [False, True], ids=["full", "vmap"])
def test_shape_priced_estimates_on_every_axes_combination_of_4d_outputs(vmap):
    # Jacobian contraction's and NTK-vector products' estimates come from shapes alone (cheap to
    # sweep); structured derivatives' traces the method and is covered by the auto tests above.
    from ntk_zoo.core import count
    from ntk_zoo.engine import METHODS

    case = _conv4d()
    subsets = [c for r in range(5) for c in itertools.combinations(range(4), r)]
    failed = []
    for t, d in itertools.product(subsets, subsets):
        if set(t) & set(d):
            continue
        kernel_fn = ntk_zoo.ntk_fn(
            case.f, trace_axes=t, diagonal_axes=d, vmap_axes=case.vmap_axes if vmap else None
        )
        problem = kernel_fn.problem(case.x1, case.x2, case.params)
        counts = count(problem)
        for method in ("jacobian_contraction", "ntk_vector_products"):
            cost = METHODS[ntk_zoo.Method(method)].cost(problem, counts)
            if not (np.isfinite(cost) and cost > 0):
                failed.append((t, d, method, cost))
    assert not failed


def test_axes_grid_is_large():
    # Guards the sweep above against being emptied by the overlap filter.
    assert len(AXES) >= 30


@pytest.mark.parametrize("same", [True, False], ids=["x2=None", "x2"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_ntk_vp_fn_matches_dense_kernel(case, same):
    x2 = None if same else case.x2
    kwargs = case.kwargs(same)
    fx2 = jax.eval_shape(
        lambda p: case.f(
            p, case.x1 if same else case.x2, **(case.kwargs1 if same else case.kwargs2)
        ),
        case.params,
    )
    rng = np.random.default_rng(0)
    v = jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape)), fx2)
    got = jax.jit(ntk_zoo.ntk_vp_fn(case.f, case.x1, x2, case.params, **kwargs))(v)
    want = oracle_vp(case.f, case.x1, x2, case.params, v, **kwargs)
    assert rel_error(got, want) <= EXACT
