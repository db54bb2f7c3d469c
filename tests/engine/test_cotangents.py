"""``cotangents=`` and ``preconditioner=``: every kind and every method against the float64
oracle's full kernel, contracted (``v_iᵀ Θ v_j``) or scaled (``J D Jᵀ``) here in NumPy."""

import dataclasses
import functools
import string

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntk_zoo
from tests.cases import CASES
from tests.oracle import oracle_ntk, rel_error

METHODS = ["jacobian_contraction", "ntk_vector_products", "structured_derivatives", "auto"]
EXACT = 1e-10  # float64 against float64
CASE = {c.name: c for c in CASES}


def _deinterleave(k, ndim):
    """An interleaved ``(a0, b0, a1, b1, ...)`` kernel as ``(a0, a1, ..., b0, b1, ...)``."""
    return np.transpose(np.asarray(k, np.float64), [*range(0, 2 * ndim, 2), *range(1, 2 * ndim, 2)])


def _contracted(full, v1, v2, covered, trace, diagonal):
    """``Σ_covered v1 · Θ · v2`` of one output leaf, then the usual axis rules on the rest."""
    ndim = v1.ndim
    a, b = string.ascii_letters[:ndim], string.ascii_letters[ndim : 2 * ndim]
    kept = [i for i in range(ndim) if i not in covered]
    b = "".join(a[i] if i in trace + diagonal else b[i] for i in range(ndim))
    out = ""
    for i in kept:
        out += a[i] if i in diagonal else "" if i in trace else a[i] + b[i]
    scale = np.prod([v1.shape[i] for i in trace])
    return np.einsum(f"{a}{b},{a},{b}->{out}", full, v1, v2) / scale


def _flat(tree, batch_axis=0):
    """A pytree of outputs (or cotangents broadcast to them) as one ``(n, o)`` array."""
    leaves = [jnp.moveaxis(jnp.asarray(y), batch_axis, 0) for y in jax.tree.leaves(tree)]
    return jnp.concatenate([y.reshape(y.shape[0], -1) for y in leaves], axis=1)


def _oracle_pair(case, same, weights, batch_axis=0):
    """``v_iᵀ Θ v_j`` from the oracle's full kernel of all outputs flattened into one vector
    (cross terms between output leaves included: the contracted scalar sums the leaves)."""
    x2 = case.x1 if same else case.x2
    flat_f = lambda p, x: _flat(case.f(p, x), batch_axis)
    full = oracle_ntk(flat_f, case.x1, None if same else case.x2, case.params, trace_axes=())

    def v(x):
        fx = case.f(case.params, x)
        w = jax.tree.broadcast(weights(fx, x), fx, is_leaf=lambda c: c is None)
        w = jax.tree.map(
            lambda y, c: jnp.zeros_like(y) if c is None else jnp.broadcast_to(c, y.shape),
            fx,
            w,
            is_leaf=lambda c: c is None,
        )
        return np.asarray(_flat(w, batch_axis), np.float64)

    return np.einsum("ijab,ia,jb->ij", np.asarray(full), v(case.x1), v(x2))


def _n_outputs(fx):
    return sum(y.size // y.shape[0] for y in jax.tree.leaves(fx))


def _pntk(fx, x):
    return jax.tree.map(lambda y: jnp.full(y.shape, _n_outputs(fx) ** -0.5), fx)


def _softmax_residual(fx, x):
    return jax.nn.softmax(fx, axis=-1) - 0.25  # nonlinear in fx: checks v is held constant


# (case, kind): the cotangent given to ntk_fn, and the oracle's per-example weights.
KINDS = {
    ("mlp", "pntk"): ("pntk", _pntk),
    ("mlp", "array"): (np.array([1.0, -1.0, 0.5]), lambda fx, x: np.array([1.0, -1.0, 0.5])),
    ("mlp", "callable"): (_softmax_residual, _softmax_residual),
    ("pytree_out", "pntk"): ("pntk", _pntk),
    ("pytree_out", "tree"): (  # one leaf left out, the other covered on its trailing (4, 2)
        {"logits": None, "aux": [np.arange(8.0).reshape(4, 2) / 8]},
        lambda fx, x: {"logits": None, "aux": [np.arange(8.0).reshape(4, 2) / 8]},
    ),
    ("pytree_in", "callable"): (
        lambda fx, x: jnp.tanh(fx) * x["a"].sum(-1, keepdims=True),
        lambda fx, x: jnp.tanh(fx) * x["a"].sum(-1, keepdims=True),
    ),
}


# Both sides (x2=None and x2 given) for every method on the hardest kind; x2 given elsewhere.
BOTH = ("mlp", "callable")
GRID = [(ck, same) for ck in KINDS for same in ((True, False) if ck == BOTH else (False,))]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("case_kind", "same"),
    GRID,
    ids=[f"{c}-{k}-{'x2=None' if same else 'x2'}" for (c, k), same in GRID],
)
def test_cotangents_match_contracted_oracle(case_kind, same, method):
    case = CASE[case_kind[0]]
    given, weights = KINDS[case_kind]
    kernel_fn = ntk_zoo.ntk_fn(case.f, method=method, vmap_axes=case.vmap_axes, cotangents=given)
    got = kernel_fn(case.x1, None if same else case.x2, case.params)
    want = _oracle_pair(case, same, weights)
    assert got.shape == want.shape
    assert rel_error(got, want) <= EXACT


def test_uncovered_axes_keep_trace_and_diagonal_rules():
    """conv4d's (n, h, w, c) outputs and a cotangent over c: h stays diagonal, w traced (divided
    by its size), c is contracted by v (and leaves trace_axes, undivided)."""
    case = CASE["conv4d"]
    v = np.array([1.5, -0.5])
    axes = dict(trace_axes=(2, -1), diagonal_axes=(1,))
    kernel_fn = ntk_zoo.ntk_fn(case.f, vmap_axes=0, cotangents=v, **axes)
    got = kernel_fn(case.x1, case.x2, case.params)
    full = oracle_ntk(case.f, case.x1, case.x2, case.params, trace_axes=())
    fx1, fx2 = case.f(case.params, case.x1), case.f(case.params, case.x2)
    v1, v2 = np.broadcast_to(v, fx1.shape), np.broadcast_to(v, fx2.shape)
    want = _contracted(_deinterleave(full, 4), v1, v2, (3,), (2,), (1,))
    assert got.shape == want.shape == (2, 2, 3)
    assert rel_error(got, want) <= EXACT


def test_example_axis_from_vmap_axes():
    """batch_last's outputs are (o, n): the cotangent covers o, the kernel is (n1, n2)."""
    case = CASE["batch_last"]
    v = np.array([0.3, -2.0])
    kernel_fn = ntk_zoo.ntk_fn(case.f, vmap_axes=case.vmap_axes, trace_axes=(0,), cotangents=v)
    got = kernel_fn(case.x1, case.x2, case.params)
    want = _oracle_pair(case, False, lambda fx, x: v[:, None], batch_axis=1)
    assert rel_error(got, want) <= EXACT


# --- preconditioner ------------------------------------------------------------------------------


@functools.cache
def _jacobian_leaves(name, side):
    """Dense float64 Jacobians of a case at x1 or x2, per param leaf (computed once)."""
    case = CASE[name]
    jac = jax.jit(jax.jacrev(case.f))(case.params, case.x1 if side == 1 else case.x2)
    return jax.tree.leaves(jac)


def _oracle_preconditioned(case, d, same=False):
    """Mean over logits of ``Σ_p J[i, o, p] D[p] J[j, o, p]`` from dense float64 Jacobians."""
    total = 0
    for j1, j2, leaf, dl in zip(
        _jacobian_leaves(case.name, 1),
        _jacobian_leaves(case.name, 1 if same else 2),
        jax.tree.leaves(case.params),
        jax.tree.leaves(d),
    ):
        a = np.asarray(j1).reshape(*j1.shape[:2], -1)
        b = np.asarray(j2).reshape(*j2.shape[:2], -1)
        dd = np.broadcast_to(np.asarray(dl, np.float64), leaf.shape).ravel()
        total = total + np.einsum("iop,jop,p->ij", a, b, dd) / a.shape[1]
    return total


def _mlp_d():
    rng = np.random.default_rng(0)
    params = CASE["mlp"].params
    d = {k: rng.uniform(0, 2, v.shape) for k, v in params.items()}
    d |= {"b0": 0.0, "b1": 1.0, "b2": 3.0}  # dropped, unchanged, a scalar per leaf
    return d


@pytest.mark.parametrize("method", METHODS)
def test_preconditioner_matches_oracle(method):
    case, d = CASE["mlp"], _mlp_d()
    kernel_fn = ntk_zoo.ntk_fn(case.f, method=method, vmap_axes=0, preconditioner=d)
    # pytest turns warnings into errors (pyproject.toml): structured derivatives' dense fallback
    # would fail this test, so D stays structured (a scalar factor, or an elementwise scaling).
    got = kernel_fn(case.x1, case.x2, case.params)
    assert rel_error(got, _oracle_preconditioned(case, d)) <= EXACT


MASKS = {
    "regex": ("^w", {"w0": 1, "b0": 0, "w1": 1, "b1": 0, "w2": 1, "b2": 0}),
    "predicate": (
        lambda path, value: value.ndim == 1,
        {"w0": 0, "b0": 1, "w1": 0, "b1": 1, "w2": 0, "b2": 1},
    ),
    "booleans": (
        {"w0": False, "b0": False, "w1": False, "b1": False, "w2": True, "b2": True},
        {"w0": 0, "b0": 0, "w1": 0, "b1": 0, "w2": 1, "b2": 1},
    ),
}


@pytest.mark.parametrize("mask", list(MASKS))
def test_masks_match_oracle(mask):
    case = CASE["mlp"]
    given, as_d = MASKS[mask]
    kernel_fn = ntk_zoo.ntk_fn(case.f, vmap_axes=0, preconditioner=given)
    got = kernel_fn(case.x1, None, case.params)
    assert rel_error(got, _oracle_preconditioned(case, as_d, same=True)) <= EXACT


def test_prefix_mask_and_per_param_leaves():
    """A prefix mask on nested params; sum_params=False gives zeros for the masked leaves."""
    case = CASE["nested"]
    mask = {"layer": True, "bias_only": False, "empty": False}
    kernel_fn = ntk_zoo.ntk_fn(case.f, vmap_axes=0, sum_params=False, preconditioner=mask)
    got = kernel_fn(case.x1, case.x2, case.params)
    want = oracle_ntk(case.f, case.x1, case.x2, case.params, sum_params=False)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert rel_error(got["layer"], want["layer"]) <= EXACT
    assert not np.any(np.asarray(got["bias_only"]["b"]))
    assert np.any(np.asarray(want["bias_only"]["b"]))  # the mask removed a real contribution


def test_preconditioner_with_cotangents():
    case, d = CASE["mlp"], _mlp_d()
    kernel_fn = ntk_zoo.ntk_fn(
        case.f,
        method="structured_derivatives",
        vmap_axes=0,
        trace_axes=(),
        cotangents="pntk",
        preconditioner=d,
    )
    got = kernel_fn(case.x1, case.x2, case.params)
    # Mean over logits of J D Jᵀ is (1/O) Σ_o; the pNTK is (1/O) Σ_ab: build it from trace_axes=().
    want = 0
    for j1, j2, leaf, dl in zip(
        _jacobian_leaves(case.name, 1),
        _jacobian_leaves(case.name, 2),
        jax.tree.leaves(case.params),
        jax.tree.leaves(d),
    ):
        a = np.asarray(j1).reshape(*j1.shape[:2], -1).sum(1)
        b = np.asarray(j2).reshape(*j2.shape[:2], -1).sum(1)
        dd = np.broadcast_to(np.asarray(dl, np.float64), leaf.shape).ravel()
        want = want + np.einsum("ip,jp,p->ij", a, b, dd) / j1.shape[1]
    assert rel_error(got, want) <= EXACT


# --- errors --------------------------------------------------------------------------------------

ERRORS = {
    "cotangent-shape": (dict(cotangents=np.ones(4)), ValueError, "does not broadcast"),
    "cotangent-ndim": (dict(cotangents=np.ones((2, 2, 3))), ValueError, "at most as many axes"),
    "cotangent-name": (dict(cotangents="ntk"), ValueError, "'pntk'"),
    "cotangent-callable-shape": (
        dict(cotangents=lambda fx, x: jnp.ones((4,))),
        ValueError,
        "must broadcast",
    ),
    "negative-d": (dict(preconditioner={"w0": -1.0}), ValueError, "negative"),
    "d-shape": (dict(preconditioner={"w0": np.ones((6, 4))}), ValueError, "shape"),
    "d-structure": (dict(preconditioner={"nope": 1.0}), ValueError, "not shaped like"),
    "mask-nothing": (dict(preconditioner="^nothing$"), ValueError, "selects no parameter"),
}


@pytest.mark.parametrize("error", list(ERRORS))
def test_clear_errors(error):
    case = CASE["mlp"]
    kw, kind, match = ERRORS[error]
    if error == "negative-d" or error == "d-shape":
        kw = {"preconditioner": {**{k: 1.0 for k in case.params}, **kw["preconditioner"]}}
    with pytest.raises(kind, match=match):
        ntk_zoo.ntk_fn(case.f, vmap_axes=0, **kw)(case.x1, None, case.params)


# --- through kernel_fn and batched ---------------------------------------------------------------


def test_kernel_fn_and_batched_take_cotangents(tmp_path):
    case = CASE["mlp"]
    x = jnp.concatenate([case.x1, case.x2])
    want = _oracle_pair(dataclasses.replace(case, x1=x), True, _softmax_residual)
    both = ntk_zoo.kernel_fn(case.f, vmap_axes=0, cotangents=_softmax_residual)(
        x, None, case.params
    )
    assert rel_error(both.ntk, want) <= EXACT
    fx = case.f(case.params, x)
    g = (jax.lax.stop_gradient(_softmax_residual(fx, x)) * fx).sum(-1)
    np.testing.assert_allclose(both.nngp, np.outer(g, g), rtol=1e-12)  # the NNGP of g
    kernel_fn = ntk_zoo.ntk_fn(case.f, vmap_axes=0, cotangents=_softmax_residual)
    blocks = ntk_zoo.batched(kernel_fn, batch_size=2, progress=False, checkpoint_dir=str(tmp_path))
    assert rel_error(blocks(x, None, case.params), want) <= EXACT
