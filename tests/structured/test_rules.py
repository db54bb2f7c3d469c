"""Every structure rule against the dense primitive Jacobian (``jax.jacfwd`` and ``jax.jacrev``),
and every structural claim (identity, diagonal, broadcast axes) checked on that Jacobian."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntk_zoo.structured import RULES, _registry
from ntk_zoo.structured._ir import Var, program_of
from ntk_zoo.structured._structure import dense_jacobian
from tests.structured.primitives import PRIMS


def _use(prim):
    consts = prim.make_consts()
    w = np.random.default_rng(0).standard_normal(prim.w_shape)
    fn = lambda w: prim.fn(w, *consts)
    program = program_of(fn, w)  # fn is linear in w: its own program is its linearisation
    users = program.consumers()[program.inputs[0]]
    assert len(users) == 1, users
    eqn, idx = users[0]
    args = [
        None if isinstance(v, Var) and v in program.tangent else program.value(v)
        for v in eqn.inputs
    ]
    return fn, w, eqn, idx, args


def _dense(s, y_shape, w_shape):
    # jitted: one compile per rule instead of one per eager operation of the einsum or pullback
    if s.pullback is None:
        return np.asarray(jax.jit(lambda: dense_jacobian(s, y_shape, w_shape, jnp.float64))())
    n = int(np.prod(y_shape, dtype=int))
    rows = jax.jit(lambda: jax.vmap(lambda e: s.pullback([e]))(jnp.eye(n).reshape(n, *y_shape)))()
    return np.asarray(rows).reshape(*y_shape, *w_shape)


def _check_claims(s, jac, y_ndim):
    """The claims of ``s`` hold on the dense Jacobian ``jac`` (axes ``y + w``)."""
    for a, b in s.trace + s.diag:
        moved = np.moveaxis(jac, (a, y_ndim + b), (0, 1))
        off = ~np.eye(moved.shape[0], dtype=bool)
        assert np.all(moved[off] == 0), f"entries off the diagonal of axes y{a}/w{b}"
        if (a, b) in s.trace:  # an identity: the same block at every diagonal position
            diagonal = np.stack([moved[i, i] for i in range(moved.shape[0])])
            np.testing.assert_allclose(diagonal, diagonal[:1].repeat(len(diagonal), 0))
    for a in range(y_ndim):
        if s.pullback is None and a not in s.y_axes_used:  # broadcast: constant along a
            moved = np.moveaxis(jac, a, 0)
            np.testing.assert_allclose(moved, moved[:1].repeat(moved.shape[0], 0))


@pytest.mark.parametrize("prim", PRIMS, ids=[p.name for p in PRIMS])
def test_rule_matches_dense_jacobian(prim):
    fn, w, eqn, idx, args = _use(prim)
    assert eqn.name == prim.primitive
    assert eqn.name in RULES
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a registered rule never falls back with a warning
        s = _registry.structure(eqn, idx, args)
    y_shape = eqn.outputs[0].shape
    got = _dense(s, y_shape, prim.w_shape)
    # both dense Jacobians in one compiled program (eager, each operation compiles on its own)
    fwd, rev = map(np.asarray, jax.jit(lambda w: (jax.jacfwd(fn)(w), jax.jacrev(fn)(w)))(w))
    assert got.shape == fwd.shape
    np.testing.assert_allclose(got, fwd, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got, rev, rtol=1e-12, atol=1e-12)
    _check_claims(s, fwd, len(y_shape))


def test_structured_rules_for_the_bilinear_primitives():
    # The primitives whose structure is where the speed comes from never use the pullback.
    for prim in PRIMS:
        if prim.primitive in ("dot_general", "gather") or prim.name.endswith("-kernel"):
            _, _, eqn, idx, args = _use(prim)
            assert _registry.structure(eqn, idx, args).pullback is None, prim.name


def test_every_required_primitive_has_a_rule():
    required = """dot_general conv_general_dilated add sub mul div neg broadcast_in_dim reshape
        transpose squeeze expand_dims concatenate pad rev reduce_sum reduce_window_sum
        convert_element_type copy select_n dynamic_slice dynamic_update_slice gather""".split()
    assert not [name for name in required if name not in RULES]
    tested = {p.primitive for p in PRIMS}
    assert not [name for name in required if name not in tested and name != "expand_dims"]


@pytest.mark.parametrize(
    "prim",
    [p for p in PRIMS if p.primitive == "conv_general_dilated" and p.name.endswith("-kernel")],
    ids=lambda p: p.name,
)
def test_conv_patches_are_data_movement(prim):
    # The kernel's structure (the input patches) is gathered by pad and strided slices, not
    # by lax.conv_general_dilated_patches' one-hot grouped convolution, which XLA's CPU
    # backend runs as a convolution (a fixed cost of every structured conv kernel, a large
    # share of the pNTK's: issue 22). The values are checked by the test above.
    _, _, eqn, idx, args = _use(prim)
    assert idx == 1 and args[1] is None
    jaxpr = jax.make_jaxpr(lambda lhs: _registry.structure(eqn, idx, [lhs, None]).d)(args[0])
    assert "conv_general_dilated" not in {e.primitive.name for e in jaxpr.jaxpr.eqns}
