"""nngp_fn / kernel_fn against a float64 NumPy oracle: the outer product f(x1) f(x2)ᵀ reduced
by einsum index repetition, on every case of tests/cases.py and the 4-D axis sweep."""

import string

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntk_zoo
from tests.cases import CASE_IDS, CASES
from tests.engine.test_exactness import AXES
from tests.oracle import oracle_ntk, rel_error

EXACT = 1e-10  # float64 against float64


def oracle_nngp(f, x1, x2, params, *, trace_axes=(-1,), diagonal_axes=(), **kwargs):
    """Per output leaf: einsum of f(x1) and f(x2) with traced letters shared (summed) and
    diagonal letters shared and kept, divided by the traced sizes."""
    pick = lambda v, i: v[i] if isinstance(v, tuple) and len(v) == 2 else v
    kw1 = {k: pick(v, 0) for k, v in kwargs.items()}
    kw2 = {k: pick(v, 1) for k, v in kwargs.items()}
    out1 = f(params, x1, **kw1)
    out2 = out1 if x2 is None else f(params, x2, **kw2)
    kernels = []
    for a, b in zip(jax.tree.leaves(out1), jax.tree.leaves(out2)):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        nd = a.ndim
        canon = lambda axes, nd=nd: sorted({x % nd for x in np.atleast_1d(axes).tolist()})
        trace, diagonal = canon(trace_axes), canon(diagonal_axes)
        la = list(string.ascii_letters[:nd])
        lb = [la[i] if i in trace + diagonal else string.ascii_letters[nd + i] for i in range(nd)]
        out = []
        for i in range(nd):
            if i in diagonal:
                out.append(la[i])
            elif i not in trace:
                out += [la[i], lb[i]]
        k = np.einsum(f"{''.join(la)},{''.join(lb)}->{''.join(out)}", a, b)
        kernels.append(k / np.prod([a.shape[i] for i in trace]))
    return jax.tree.unflatten(jax.tree.structure(out1), kernels)


# The NNGP does not depend on vmap_axes (it is only validated); the kernel function compiles
# one program whether or not it is called under jit: one combination each keeps this quick.
SETTINGS = [(True, True, False), (False, False, True)]


@pytest.mark.parametrize("vmap,same,jit", SETTINGS, ids=["vmap-x2=None", "full-x2-jit"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_nngp_matches_oracle(case, vmap, same, jit):
    fn = ntk_zoo.nngp_fn(
        case.f, trace_axes=case.trace_axes, vmap_axes=case.vmap_axes if vmap else None
    )
    fn = jax.jit(fn) if jit else fn
    x2 = None if same else case.x2
    got = fn(case.x1, x2, case.params, **case.kwargs(same))
    want = oracle_nngp(
        case.f, case.x1, x2, case.params, trace_axes=case.trace_axes, **case.kwargs(same)
    )
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert rel_error(got, want) <= EXACT


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_full_nngp_matches_oracle(case):
    fn = ntk_zoo.nngp_fn(case.f, trace_axes=())
    got = fn(case.x1, case.x2, case.params, **case.kwargs(False))
    want = oracle_nngp(case.f, case.x1, case.x2, case.params, trace_axes=(), **case.kwargs(False))
    assert rel_error(got, want) <= EXACT


@pytest.mark.parametrize("trace_axes,diagonal_axes", AXES, ids=[f"t{t}-d{d}" for t, d in AXES])
def test_nngp_trace_and_diagonal_axes_on_4d_outputs(trace_axes, diagonal_axes):
    case = next(c for c in CASES if c.name == "conv4d")
    fn = ntk_zoo.nngp_fn(case.f, trace_axes=trace_axes, diagonal_axes=diagonal_axes)
    got = fn(case.x1, case.x2, case.params)
    want = oracle_nngp(
        case.f, case.x1, case.x2, case.params, trace_axes=trace_axes, diagonal_axes=diagonal_axes
    )
    assert got.shape == want.shape
    assert rel_error(got, want) <= EXACT


# The NTK half is ntk_fn's, tested on every case in tests/engine: a few output structures here.
BOTH = [c for c in CASES if c.name in ("mlp", "pytree_out", "batch_last", "kwarg")]


@pytest.mark.parametrize("case", BOTH, ids=[c.name for c in BOTH])
def test_kernel_fn_gives_both_kernels(case):
    fn = ntk_zoo.kernel_fn(
        case.f,
        method="jacobian_contraction",
        trace_axes=case.trace_axes,
        vmap_axes=case.vmap_axes,
    )
    got = fn(case.x1, case.x2, case.params, **case.kwargs(False))
    assert got._fields == ("nngp", "ntk")
    kw = dict(trace_axes=case.trace_axes, **case.kwargs(False))
    assert rel_error(got.nngp, oracle_nngp(case.f, case.x1, case.x2, case.params, **kw)) <= EXACT
    assert rel_error(got.ntk, oracle_ntk(case.f, case.x1, case.x2, case.params, **kw)) <= EXACT


def test_kernel_fn_get_forms():
    case = CASES[0]
    nngp = ntk_zoo.kernel_fn(case.f, get="nngp")(case.x1, None, case.params)
    assert isinstance(nngp, jax.Array) and nngp.shape == (3, 3)
    reordered = ntk_zoo.kernel_fn(case.f, get=("ntk", "nngp"))(case.x1, None, case.params)
    assert reordered._fields == ("ntk", "nngp")
    assert rel_error(reordered.nngp, nngp) <= EXACT
    both_fn = ntk_zoo.kernel_fn(case.f, get=None, method="jacobian_contraction")
    both = both_fn(case.x1, None, case.params)
    assert both._fields == ("nngp", "ntk")
    jitted = jax.jit(both_fn)(case.x1, None, case.params)  # traced through: same numbers
    assert rel_error(jitted.nngp, both.nngp) <= EXACT and rel_error(jitted.ntk, both.ntk) <= EXACT
    with pytest.raises(ValueError, match="get="):
        ntk_zoo.kernel_fn(case.f, get=("ntk", "ntkgp"))


def test_pure_fn_and_batched():
    case = CASES[0]
    pure = ntk_zoo.PureFn(case.f, case.params)
    want = oracle_nngp(case.f, case.x1, None, case.params)
    assert rel_error(ntk_zoo.nngp_fn(pure)(case.x1), want) <= EXACT
    big = ntk_zoo.batched(ntk_zoo.nngp_fn(case.f, vmap_axes=0), batch_size=2, progress=False)
    assert rel_error(big(case.x1, None, case.params), want) <= EXACT
    want_12 = oracle_nngp(case.f, case.x1, case.x2, case.params)
    assert rel_error(big(case.x1, case.x2, case.params), want_12) <= EXACT


def test_nngp_dtype_is_the_outputs():
    f = lambda p, x: (x @ p).astype(jnp.float32)
    k = ntk_zoo.nngp_fn(f)(jnp.ones((2, 3)), None, jnp.ones((3, 4)))
    assert k.dtype == jnp.float32
