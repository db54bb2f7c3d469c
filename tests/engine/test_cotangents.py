"""``cotangents=`` and ``preconditioner=``: every kind and every method against the float64
oracle's full kernel, contracted (``v_iᵀ Θ v_j``) or scaled (``J D Jᵀ``) here in NumPy."""

import string
import warnings

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
    ("pytree_out", "tree"): (  # one leaf left out, the other weighted per logit
        {"logits": np.array([2.0, -1.0]), "aux": None},
        lambda fx, x: {"logits": np.array([2.0, -1.0]), "aux": None},
    ),
    ("pytree_out", "tree-trailing"): (  # a cotangent covering the trailing axes (4, 2)
        {"logits": None, "aux": [np.arange(8.0).reshape(4, 2) / 8]},
        lambda fx, x: {"logits": None, "aux": [np.arange(8.0).reshape(4, 2) / 8]},
    ),
    ("pytree_in", "callable"): (
        lambda fx, x: jnp.tanh(fx) * x["a"].sum(-1, keepdims=True),
        lambda fx, x: jnp.tanh(fx) * x["a"].sum(-1, keepdims=True),
    ),
}


# Both sides (x2=None and x2 given) for every method on the hardest kind; x2 given elsewhere.
GRID = [(ck, same) for ck in KINDS for same in ((True, False) if ck[1] == "callable" else (False,))]


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
