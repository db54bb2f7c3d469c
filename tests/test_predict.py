"""Closed-form linearised training against actually training the linearised model (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ntk_zoo
from ntk_zoo import predict
from ntk_zoo.spectrum import flatten_kernel
from tests.cases import add_bias
from tests.oracle import rel_error


def mlp(params, x):
    h = jnp.tanh(add_bias(x @ params["w1"], params["b1"]))
    return add_bias(h @ params["w2"] / np.sqrt(h.shape[-1]), params["b2"])


def make_problem(o, seed=0):
    k = jax.random.split(jax.random.key(seed), 6)
    params = {
        "w1": jax.random.normal(k[0], (3, 16), jnp.float64),
        "b1": 0.1 * jax.random.normal(k[1], (16,), jnp.float64),
        "w2": jax.random.normal(k[2], (16, o), jnp.float64),
        "b2": jnp.zeros(o, jnp.float64),
    }
    x_train = jax.random.normal(k[3], (8, 3), jnp.float64)
    x_test = jax.random.normal(k[4], (5, 3), jnp.float64)
    y_train = jax.random.normal(k[5], (8, o), jnp.float64)
    return params, x_train, x_test, y_train


def train_linearised(params, x_train, x_test, y_train, learning_rate, checkpoints):
    """Full-batch SGD on L = ‖f_lin(X) − Y‖² / (2·Y.size); outputs at each checkpoint step."""
    f_lin = ntk_zoo.linearize(mlp, params)
    loss = lambda p: 0.5 * jnp.sum((f_lin(p, x_train) - y_train) ** 2) / y_train.size
    opt = optax.sgd(learning_rate)

    @jax.jit
    def run(p, state, steps):
        def step(_, carry):
            p, state = carry
            updates, state = opt.update(jax.grad(loss)(p), state)
            return optax.apply_updates(p, updates), state

        return jax.lax.fori_loop(0, steps, step, (p, state))

    p, state, done, out = params, opt.init(params), 0, []
    for steps in checkpoints:
        if steps > done:
            p, state = run(p, state, steps - done)
            done = steps
        out.append((np.asarray(f_lin(p, x_train)), np.asarray(f_lin(p, x_test))))
    return out


def kernels(params, x_train, x_test, trace_axes):
    kernel_fn = ntk_zoo.ntk_fn(mlp, trace_axes=trace_axes)
    return kernel_fn(x_train, None, params), kernel_fn(x_test, x_train, params)


def test_linearize_matches_at_the_expansion_point_and_keeps_the_ntk():
    params, x, _, _ = make_problem(2)
    f_lin = ntk_zoo.linearize(mlp, params)
    np.testing.assert_allclose(f_lin(params, x), mlp(params, x), rtol=1e-14)
    moved = jax.tree.map(lambda a: a + 0.3, params)
    linear_ntk = ntk_zoo.ntk_fn(f_lin)(x, None, moved)
    assert rel_error(linear_ntk, ntk_zoo.ntk_fn(mlp)(x, None, params)) < 1e-12
    pure = ntk_zoo.linearize(ntk_zoo.PureFn(mlp, params))
    assert isinstance(pure, ntk_zoo.PureFn) and pure.params is params
    np.testing.assert_allclose(pure.apply(moved, x), f_lin(moved, x), rtol=1e-14)


@pytest.mark.parametrize(
    "o, trace_axes", [(2, ()), (1, (-1,))], ids=["full-kernel", "shared-kernel-one-logit"]
)
def test_discrete_formula_equals_sgd_on_linearised_model(o, trace_axes):
    params, x_train, x_test, y = make_problem(o)
    k_tt, k_st = kernels(params, x_train, x_test, trace_axes)
    lam_max = np.linalg.eigvalsh(flatten_kernel(k_tt))[-1]
    lr = 0.5 * y.size / lam_max  # large steps: η λ_max / N = 0.5
    checkpoints = [0, 1, 7, 50, 400]
    trained = train_linearised(params, x_train, x_test, y, lr, checkpoints)
    fn = predict.gradient_descent_mse(k_tt, y, learning_rate=lr, discrete=True)
    train_t, test_t = fn(np.array(checkpoints), mlp(params, x_train), mlp(params, x_test), k_st)
    assert train_t.shape == (5, 8, o) and test_t.shape == (5, 5, o)
    for i, (f_train, f_test) in enumerate(trained):
        assert rel_error(train_t[i], f_train) < 1e-9, checkpoints[i]
        assert rel_error(test_t[i], f_test) < 1e-9, checkpoints[i]


def test_gradient_flow_matches_sgd_with_small_steps():
    params, x_train, x_test, y = make_problem(2)
    k_tt, k_st = kernels(params, x_train, x_test, ())
    lam_max = np.linalg.eigvalsh(flatten_kernel(k_tt))[-1]
    lr = 2e-4 * y.size / lam_max  # η λ_max / N = 2e-4: gradient descent ≈ gradient flow
    checkpoints = [0, 1000, 4000, 20000]
    trained = train_linearised(params, x_train, x_test, y, lr, checkpoints)
    fn = predict.gradient_descent_mse(k_tt, y, learning_rate=lr)
    f0_train, f0_test = mlp(params, x_train), mlp(params, x_test)
    for t, (f_train, f_test) in zip(checkpoints, trained):
        train_t, test_t = fn(t, f0_train, f0_test, k_st)
        # Discretisation error ≈ ηλ/(2eN) ≈ 4e-5 of the residual; required 1e-4.
        assert rel_error(train_t, f_train) < 1e-4, t
        assert rel_error(test_t, f_test) < 1e-4, t


@pytest.mark.parametrize("trace_axes", [(-1,), ()], ids=["shared-kernel", "full-kernel"])
def test_infinite_time_is_kernel_regression(trace_axes):
    params, x_train, x_test, y = make_problem(2)
    k_tt, k_st = (np.asarray(k) for k in kernels(params, x_train, x_test, trace_axes))
    f0_train, f0_test = np.asarray(mlp(params, x_train)), np.asarray(mlp(params, x_test))
    fn = predict.gradient_descent_mse(k_tt, y)
    for t in (np.inf, None):
        train_t, test_t = fn(t, f0_train, f0_test, k_st)
        if trace_axes:
            expected = k_st @ np.linalg.solve(k_tt, y - f0_train) + f0_test
        else:
            solved = np.linalg.solve(flatten_kernel(k_tt), (y - f0_train).ravel())
            expected = (flatten_kernel(k_st) @ solved).reshape(5, 2) + f0_test
        assert rel_error(test_t, expected) < 1e-8
        assert rel_error(train_t, y) < 1e-8
    # Discrete steps converge to the same limit.
    lam_max = np.linalg.eigvalsh(flatten_kernel(k_tt))[-1]
    discrete = predict.gradient_descent_mse(k_tt, y, learning_rate=y.size / lam_max, discrete=True)
    assert rel_error(discrete(np.inf, f0_train, f0_test, k_st)[1], expected) < 1e-8


def test_shared_kernel_equals_kronecker_full_kernel():
    params, x_train, x_test, y = make_problem(3)
    k_tt, k_st = (np.asarray(k) for k in kernels(params, x_train, x_test, (-1,)))
    kron = lambda k: np.einsum("ij,ab->ijab", k, np.eye(3))
    f0, f0_test = mlp(params, x_train), mlp(params, x_test)
    t = np.array([0.0, 3.0, 30.0])
    shared = predict.gradient_descent_mse(k_tt, y, learning_rate=0.7)(t, f0, f0_test, k_st)
    full = predict.gradient_descent_mse(kron(k_tt), y, learning_rate=0.7)(
        t, f0, f0_test, kron(k_st)
    )
    for a, b in zip(shared, full):
        assert rel_error(a, b) < 1e-12
    assert rel_error(shared[0][0], f0) < 1e-14  # t = 0: the initial outputs


def test_diag_reg_is_ridge_regression():
    params, x_train, x_test, y = make_problem(1)
    k_tt, k_st = (np.asarray(k) for k in kernels(params, x_train, x_test, (-1,)))
    for reg, absolute in ((0.1, False), (0.5, True)):
        fn = predict.gradient_descent_mse(k_tt, y, diag_reg=reg, diag_reg_absolute_scale=absolute)
        scale = reg if absolute else reg * np.trace(k_tt) / 8
        _, test = fn(np.inf, 0.0, 0.0, k_st)
        expected = k_st @ np.linalg.solve(k_tt + scale * np.eye(8), y)
        assert rel_error(test, expected) < 1e-10


def test_errors():
    k = np.eye(4)
    y = np.ones((4, 2))
    with pytest.raises(ValueError, match="square"):
        predict.gradient_descent_mse(np.ones((4, 3)), y)
    with pytest.raises(ValueError, match="4 examples"):
        predict.gradient_descent_mse(k, np.ones((5, 2)))
    with pytest.raises(ValueError, match=r"\(4, 3\)"):
        predict.gradient_descent_mse(np.ones((4, 4, 3, 3)), y)
    with pytest.raises(ValueError, match="shape"):
        predict.gradient_descent_mse(np.ones((4, 4, 4)), y)
    with pytest.raises(ValueError, match="learning_rate"):
        predict.gradient_descent_mse(k, y, learning_rate=0.0)
    fn = predict.gradient_descent_mse(k, y)
    with pytest.raises(ValueError, match="both"):
        fn(1.0, 0.0, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="k_test_train"):
        fn(1.0, 0.0, 0.0, np.ones((2, 5)))
    with pytest.raises(ValueError, match=">= 0"):
        fn(-1.0, 0.0)
    with pytest.raises(ValueError, match="whole steps"):
        predict.gradient_descent_mse(k, y, discrete=True)(1.5, 0.0)
    with pytest.raises(TypeError, match="params"):
        ntk_zoo.linearize(mlp)
