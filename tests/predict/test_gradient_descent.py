"""predict.gradient_descent (ODE, any loss, momentum) against closed forms and real training.

ODE tolerance: diffrax Dopri8 with rtol = atol = 1e-11 here; compared at rel. error 1e-8.
Predictors of the same loss, layout and shapes share one compiled solve: the tests use one
problem size and mostly test predictions at two times, to compile few programs.
"""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg

import ntk_zoo
from ntk_zoo import predict
from ntk_zoo.spectrum import flatten_kernel
from tests.cases import add_bias
from tests.oracle import rel_error

TOL = dict(rtol=1e-11, atol=1e-11)
ODE = 1e-8  # relative error allowed against closed forms, given TOL


def mlp(params, x):
    h = jnp.tanh(add_bias(x @ params["w1"], params["b1"]))
    return h @ params["w2"] / np.sqrt(h.shape[-1])


def make_problem(o=2, n=6, seed=0):
    k = jax.random.split(jax.random.key(seed), 5)
    params = {
        "w1": jax.random.normal(k[0], (3, 8), jnp.float64),
        "b1": 0.1 * jax.random.normal(k[1], (8,), jnp.float64),
        "w2": jax.random.normal(k[2], (8, o), jnp.float64),
    }
    x_train = jax.random.normal(k[3], (n, 3), jnp.float64)
    x_test = jax.random.normal(k[4], (4, 3), jnp.float64)
    y = jax.nn.one_hot(jnp.arange(n) % o, o, dtype=jnp.float64)
    return params, x_train, x_test, y


def mse(fx, y):
    return 0.5 * jnp.sum((fx - y) ** 2) / y.size


def cross_entropy(fx, y):
    return -jnp.mean(jnp.sum(jax.nn.log_softmax(fx) * y, axis=-1))


def kernels(params, x_train, x_test, trace_axes):
    fn = ntk_zoo.ntk_fn(mlp, trace_axes=trace_axes, vmap_axes=0)
    return fn(x_train, None, params), fn(x_test, x_train, params)


@pytest.mark.parametrize("trace_axes", [(-1,), ()], ids=["shared", "full"])
def test_mse_equals_gradient_descent_mse(trace_axes):
    params, x_train, x_test, y = make_problem()
    k_dd, k_td = kernels(params, x_train, x_test, trace_axes)
    f0, f0_test = mlp(params, x_train), mlp(params, x_test)
    t = np.array([[3.0, 0.0], [40.0, 3.0]])  # any order, repeats and 0
    ode = predict.gradient_descent(mse, k_dd, y, learning_rate=0.7, trace_axes=trace_axes, **TOL)
    closed = predict.gradient_descent_mse(k_dd, y, learning_rate=0.7)
    got_train, got_test = ode(t, f0, f0_test, k_td)
    want_train, want_test = closed(t, f0, f0_test, k_td)
    assert got_train.shape == (2, 2, 6, 2) and got_test.shape == (2, 2, 4, 2)
    assert rel_error(got_train, want_train) < ODE
    assert rel_error(got_test, want_test) < ODE
    if trace_axes:
        assert rel_error(ode(3.0, f0), closed(3.0, f0)) < ODE  # scalar t: no time axis
        assert rel_error(ode(0.0, f0), f0) == 0.0


def test_momentum_mse_equals_the_second_order_closed_form():
    # Per eigenvector of Θ (eigenvalue λ): x'' = −(λ/N) x − ((1−m)/√η) x', x(0) = r0, x'(0) = 0,
    # in τ = √η·t; solved by the matrix exponential of [[0, 1], [−λ/N, −(1−m)/√η]].
    params, x_train, x_test, y = make_problem()
    k_dd, k_td = kernels(params, x_train, x_test, ())
    f0 = mlp(params, x_train)
    lr, m, t = 0.5, 0.8, 7.0
    fn = predict.gradient_descent(mse, k_dd, y, lr, momentum=m, trace_axes=(), **TOL)
    got = fn(np.array([t, t]), f0, mlp(params, x_test), k_td)[0][0]
    lam, vec = np.linalg.eigh(flatten_kernel(np.asarray(k_dd)))
    r0 = vec.T @ np.asarray(f0 - y).ravel()
    tau = np.sqrt(lr) * t
    friction = (1 - m) / np.sqrt(lr)
    x = [
        (scipy.linalg.expm(np.array([[0, 1], [-e / y.size, -friction]]) * tau) @ [r, 0])[0]
        for e, r in zip(lam, r0)
    ]
    want = np.asarray(y) + (vec @ np.array(x)).reshape(y.shape)
    assert rel_error(got, want) < ODE


def test_momentum_zero_tends_to_gradient_descent():
    # With momentum 0 the ODE is η·f_ss + f_s = −Θ∇L in absolute time s = η·t: its distance to
    # gradient flow shrinks in proportion to η.
    params, x_train, x_test, y = make_problem()
    k_dd, k_td = kernels(params, x_train, x_test, ())
    f0, f0_test = mlp(params, x_train), mlp(params, x_test)
    errors = []
    for lr in (1e-2, 2e-3):  # the ODE is stiff (friction 1/√η): small η costs many steps
        t = np.array([2.5, 5.0]) / lr
        plain, heavy = (
            predict.gradient_descent(cross_entropy, k_dd, y, lr, momentum=m, trace_axes=(), **TOL)(
                t, f0, f0_test, k_td
            )
            for m in (None, 0.0)
        )
        errors.append(max(rel_error(a, b) for a, b in zip(heavy, plain)))
    assert errors[1] < 4e-3
    assert 3.5 < errors[0] / errors[1] < 6.5  # first order in η: η shrank 5-fold


def test_test_outputs_follow_the_train_outputs_for_any_loss():
    # Both sides obey the same linear ODE in ∇L: f_t(x) − f_0(x) = Θ(x, X) Θ⁻¹ (f_t(X) − f_0(X)).
    params, x_train, x_test, y = make_problem()
    k_dd, k_td = kernels(params, x_train, x_test, ())
    f0, f0_test = mlp(params, x_train), mlp(params, x_test)
    for momentum in (None, 0.9):
        fn = predict.gradient_descent(
            cross_entropy, k_dd, y, 0.3, momentum=momentum, trace_axes=(), **TOL
        )
        train, test = fn(np.array([2.0, 25.0]), f0, f0_test, k_td)
        moved = np.linalg.solve(
            flatten_kernel(np.asarray(k_dd)), (train - f0[None]).reshape(2, -1).T
        )
        want = f0_test[None] + (flatten_kernel(np.asarray(k_td)) @ moved).T.reshape(test.shape)
        assert rel_error(test, want) < ODE


def train_linearised(params, x_train, x_test, y, loss, opt, steps):
    f_lin = ntk_zoo.linearize(mlp, params)
    objective = lambda p: loss(f_lin(p, x_train), y)

    @jax.jit
    def run(p):
        def step(_, carry):
            p, state = carry
            updates, state = opt.update(jax.grad(objective)(p), state)
            return optax.apply_updates(p, updates), state

        return jax.lax.fori_loop(0, steps, step, (p, opt.init(p)))[0]

    p = run(params)
    return f_lin(p, x_train), f_lin(p, x_test)


@pytest.mark.parametrize("momentum", [None, 0.9], ids=["sgd", "heavy-ball"])
def test_cross_entropy_matches_training_the_linearised_network(momentum):
    params, x_train, x_test, y = make_problem()
    k_dd, k_td = kernels(params, x_train, x_test, ())
    lr, steps = 0.02, 3000
    opt = optax.sgd(lr, momentum=momentum)
    trained = [
        train_linearised(params, x_train, x_test, y, cross_entropy, opt, s)
        for s in (steps // 2, steps)
    ]
    fn = predict.gradient_descent(
        cross_entropy, k_dd, y, lr, momentum=momentum, trace_axes=(), **TOL
    )
    predicted = fn(np.array([steps // 2, steps]), mlp(params, x_train), mlp(params, x_test), k_td)
    moved = np.max(np.abs(trained[-1][1] - mlp(params, x_test)))
    assert moved > 0.1  # training moved the outputs
    # Discretisation: O(η λ/N) ≈ 1e-3 for gradient descent, O(√η) for heavy ball.
    limit = 5e-3 if momentum is None else 5e-2
    for i, (train, test) in enumerate(trained):
        assert rel_error(predicted[0][i], train) < limit
        assert rel_error(predicted[1][i], test) < limit


def test_ode_state_resumes():
    params, x_train, x_test, y = make_problem()
    k_dd, k_td = kernels(params, x_train, x_test, ())
    fn = predict.gradient_descent(cross_entropy, k_dd, y, 0.5, momentum=0.5, trace_axes=(), **TOL)
    state0 = predict.ODEState(mlp(params, x_train), mlp(params, x_test))
    half = fn(4.0, state0, None, k_td)
    assert isinstance(half, predict.ODEState) and half.qx_train.shape == y.shape
    resumed = fn(6.0, half, None, k_td)
    whole = fn(10.0, state0, None, k_td)
    for a, b in zip(resumed, whole):
        assert rel_error(a, b) < ODE


def test_errors():
    y = jnp.ones((4, 2))
    k = jnp.eye(4)
    with pytest.raises(ValueError, match=r"needs the kernel of shape \(4, 4, 2, 2\)"):
        predict.gradient_descent(mse, k, y, trace_axes=())
    with pytest.raises(ValueError, match="momentum"):
        predict.gradient_descent(mse, k, y, momentum=1.0)
    fn = predict.gradient_descent(mse, k, y)
    with pytest.raises(ValueError, match="finite"):
        fn(np.inf, 0.0)
    with pytest.raises(ValueError, match="both"):
        fn(1.0, 0.0, jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="velocities"):
        fn(1.0, predict.ODEState(jnp.zeros((4, 2)), qx_train=jnp.zeros((4, 2))))


def test_import_does_not_load_diffrax():
    code = "import sys, ntk_zoo; sys.exit('diffrax' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_float32_kernels_use_float32_tolerances():
    params, x_train, x_test, y = make_problem()
    k_dd, _ = kernels(params, x_train, x_test, (-1,))
    f0 = mlp(params, x_train)
    got = predict.gradient_descent(mse, k_dd.astype(jnp.float32), y.astype(jnp.float32), 0.7)
    closed = predict.gradient_descent_mse(k_dd, y, learning_rate=0.7)
    out = got(20.0, f0.astype(jnp.float32))
    assert out.dtype == jnp.float32
    assert rel_error(out, closed(20.0, f0)) < 1e-4  # rtol = atol = 1e-5 by default in float32
