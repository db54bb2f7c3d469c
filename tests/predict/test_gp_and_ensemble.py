"""gp_inference, gradient_descent_mse_ensemble and max_learning_rate against direct float64
solves and closed forms (relative error ≤ 1e-10 unless stated)."""

import functools
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import ntk_zoo
from ntk_zoo import predict
from ntk_zoo.spectrum import flatten_kernel
from tests.cases import add_bias
from tests.oracle import rel_error

EXACT = 1e-10


def mlp(params, x):
    h = jnp.tanh(add_bias(x @ params["w1"], params["b1"]))
    return h @ params["w2"] / np.sqrt(h.shape[-1])


def make_problem(o=2, n=6):
    k = jax.random.split(jax.random.key(1), 5)
    params = {
        "w1": jax.random.normal(k[0], (3, 8), jnp.float64),
        "b1": 0.1 * jax.random.normal(k[1], (8,), jnp.float64),
        "w2": jax.random.normal(k[2], (8, o), jnp.float64),
    }
    x_train = jax.random.normal(k[3], (n, 3), jnp.float64)
    x_test = jax.random.normal(k[4], (4, 3), jnp.float64)
    y = jax.random.normal(k[0], (n, o), jnp.float64)
    return params, x_train, x_test, y


def init_fn(key):
    k = jax.random.split(key, 3)
    return {
        "w1": jax.random.normal(k[0], (3, 8), jnp.float64),
        "b1": 0.1 * jax.random.normal(k[1], (8,), jnp.float64),
        "w2": jax.random.normal(k[2], (8, 2), jnp.float64),
    }


@functools.cache
def all_kernels(trace_axes):
    """Kernels averaged over 24 initialisations: one network's NNGP f fᵀ has rank ≤ o, the
    average is positive definite (as the infinite-width kernels these predictors are for)."""
    _, x_train, x_test, y = make_problem()
    fn = ntk_zoo.monte_carlo_kernel_fn(
        init_fn, mlp, jax.random.key(5), 24, get=("nngp", "ntk"), trace_axes=trace_axes
    )
    dd, td, tt = fn(x_train), fn(x_test, x_train), fn(x_test)
    as_np = lambda k: {g: np.asarray(getattr(k, g)) for g in ("nngp", "ntk")}
    return as_np(dd), as_np(td), as_np(tt), np.asarray(y), (fn, x_train, x_test)


def direct(dd, td, tt, y, kind, reg):
    """Mean and covariance by np.linalg.solve on the (D, D) matrices, for y of shape (n, o)."""
    full = dd["ntk"].ndim == 4
    m = lambda k: flatten_kernel(k)
    yy = y.reshape(-1, 1) if full else y
    k = "nngp" if kind == "nngp" else "ntk"
    a = m(dd[k]) + reg * np.trace(m(dd[k])) / m(dd[k]).shape[0] * np.eye(m(dd[k]).shape[0])
    mean = m(td[k]) @ np.linalg.solve(a, yy)
    if kind in ("nngp", "ntkgp"):
        cov = m(tt[k]) - m(td[k]) @ np.linalg.solve(a, m(td[k]).T)
    else:
        p = np.linalg.solve(a, m(td["ntk"]).T)  # A⁻¹ Θ(X, x)
        cross = m(td["ntk"]) @ np.linalg.solve(a, m(td["nngp"]).T)
        cov = m(tt["nngp"]) + p.T @ m(dd["nngp"]) @ p - cross - cross.T
    return mean.reshape(4, 2), cov


@pytest.mark.parametrize("trace_axes", [(-1,), ()], ids=["shared", "full"])
@pytest.mark.parametrize("reg", [0.0, 0.1])
def test_gp_inference_equals_direct_solves(trace_axes, reg):
    dd, td, tt, y, _ = all_kernels(trace_axes)
    fn = predict.gp_inference(dd, y, diag_reg=reg, trace_axes=trace_axes)
    got = fn(("nngp", "ntk", "ntkgp"), td, tt)
    assert got._fields == ("nngp", "ntk", "ntkgp")
    for kind in got._fields:
        mean, cov = direct(dd, td, tt, y, kind, reg)
        g = getattr(got, kind)
        assert isinstance(g, predict.Gaussian) and g.mean.shape == (4, 2)
        assert g.covariance.shape == tt["nngp"].shape
        assert rel_error(g.mean, mean) < EXACT
        assert rel_error(flatten_kernel(g.covariance), cov) < EXACT


def test_gp_inference_forms_and_cache():
    dd, td, tt, y, _ = all_kernels((-1,))
    with mock.patch("scipy.linalg.cho_factor", wraps=scipy.linalg.cho_factor) as factor:
        fn = predict.gp_inference(dd, y, diag_reg=1e-3, diag_reg_absolute_scale=True)
        for _ in range(3):
            fn(("nngp", "ntk"), td, tt)
        assert factor.call_count == 2  # one Cholesky per kernel, then cached
    mean = fn("ntk", td)
    want = td["ntk"] @ np.linalg.solve(dd["ntk"] + 1e-3 * np.eye(6), y)
    assert rel_error(mean, want) < EXACT
    # Named tuples work as mappings do; a plain array serves every kind of mean.
    plain = predict.gp_inference(dd["ntk"], y, diag_reg=1e-3, diag_reg_absolute_scale=True)
    assert rel_error(plain("ntk", td["ntk"]), mean) < EXACT
    train = fn(("nngp",), None, True).nngp
    assert rel_error(train.mean, y) == 0 and not train.covariance.any()
    with pytest.raises(ValueError, match="both the NNGP and the NTK"):
        predict.gp_inference(dd["ntk"], y)("ntk", td["ntk"], tt["nngp"])
    with pytest.raises(ValueError, match="get="):
        fn("laplace", td)


def expm_sym(a):
    lam, vec = np.linalg.eigh(a)
    return lambda f: vec @ np.diag(f(lam)) @ vec.T


@pytest.mark.parametrize("trace_axes", [(-1,), ()], ids=["shared", "full"])
def test_ensemble_equals_linear_dynamics_of_a_gaussian_init(trace_axes):
    # f_t(x) = f_0(x) + Θ(x, X) P (Y − f_0(X)), P = Θ⁻¹ (I − exp(−ηΘt/N)), f_0 ~ GP(0, K):
    # mean Θ(x, X) P Y; covariance K(x, x) − Θ(x,X) P K(X,x) − transpose + Θ(x,X) P K P Θ(X,x).
    dd, td, tt, y, (fn, x_train, x_test) = all_kernels(trace_axes)
    lr, t, n = 0.8, np.array([0.0, 2.0, 30.0]), y.size
    ens = predict.gradient_descent_mse_ensemble(fn, x_train, y, lr, trace_axes=trace_axes)
    got = ens(t, x_test, ("nngp", "ntk"), compute_cov=True)
    got_train = ens(t, None, "ntk", compute_cov=True)
    m = flatten_kernel
    yy = y.reshape(-1, 1) if trace_axes == () else y
    for kind in ("nngp", "ntk"):
        theta, theta_td = m(dd[kind]), m(td[kind])
        for i, ti in enumerate(t):
            e = scipy.linalg.expm(-lr * ti * theta / n)
            p = np.linalg.solve(theta, np.eye(len(theta)) - e)
            mean = (theta_td @ p @ yy).reshape(4, 2)
            cross = theta_td @ p @ m(td["nngp"]).T
            cov = m(tt["nngp"]) - cross - cross.T + theta_td @ p @ m(dd["nngp"]) @ p @ theta_td.T
            g = getattr(got, kind)
            assert rel_error(g.mean[i], mean) < 1e-9  # a solve with cond(Θ) ~ 1e3
            assert rel_error(m(g.covariance[i]), cov) < 1e-9
            if kind == "ntk":
                assert (
                    rel_error(got_train.mean[i], ((np.eye(len(e)) - e) @ yy).reshape(6, 2)) < 1e-9
                )
                assert rel_error(m(got_train.covariance[i]), e @ m(dd["nngp"]) @ e) < 1e-9
    # The mean is gradient_descent_mse's prediction from zero initial outputs.
    closed = predict.gradient_descent_mse(dd["ntk"], y, learning_rate=lr)
    assert rel_error(got.ntk.mean, closed(t, 0.0, 0.0, td["ntk"])[1]) < 1e-9
    # t = None (Cholesky) is the limit of large t (eigenbasis), and is gp_inference.
    limit = ens(None, x_test, "ntk", compute_cov=True)
    late = ens(1e9, x_test, "ntk", compute_cov=True)
    assert (
        rel_error(limit.mean, late.mean) < 1e-8
        and rel_error(limit.covariance, late.covariance) < 1e-8
    )
    gp = predict.gp_inference(dd, y, trace_axes=trace_axes)("ntk", td, tt)
    assert rel_error(limit.covariance, gp.covariance) < EXACT


def test_ensemble_with_ntk_fn_and_diag_reg():
    params, x_train, x_test, y = make_problem()
    fn = ntk_zoo.ntk_fn(mlp, vmap_axes=0)
    ens = predict.gradient_descent_mse_ensemble(fn, x_train, y, 0.5, diag_reg=0.2, params=params)
    k_dd, k_td = np.asarray(fn(x_train, None, params)), np.asarray(fn(x_test, x_train, params))
    closed = predict.gradient_descent_mse(k_dd, y, learning_rate=0.5, diag_reg=0.2)
    assert rel_error(ens(5.0, x_test, "ntk"), closed(5.0, 0.0, 0.0, k_td)[1]) < EXACT
    with pytest.raises(ValueError, match="no 'nngp' kernel"):
        ens(5.0, x_test, "ntk", compute_cov=True)


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
def test_max_learning_rate_is_the_stability_edge(momentum):
    dd, _, _, y, _ = all_kernels(())
    lr = predict.max_learning_rate(dd["ntk"], momentum=momentum, eps=0.0)
    lam = np.linalg.eigvalsh(flatten_kernel(dd["ntk"]))[-1]
    assert abs(lr - 2 * (1 + momentum) * y.size / lam) <= 1e-12 * lr  # y.size = n·o = 12

    def radius(eta):  # heavy ball along the top eigenvector: e_{k+1} = (1+m−z) e_k − m e_{k−1}
        z = eta * lam / y.size
        return max(abs(np.linalg.eigvals([[1 + momentum - z, -momentum], [1, 0]])))

    assert radius(0.999 * lr) < 1 < radius(1.001 * lr)
    shared = predict.max_learning_rate(all_kernels((-1,))[0]["ntk"], y_train_size=y.size)
    assert shared > 0


def test_errors():
    y = np.ones((4, 2))
    with pytest.raises(ValueError, match="needs the kernel of shape"):
        predict.gp_inference(np.eye(3), y)("ntk", np.ones((1, 3)))
    with pytest.raises(ValueError, match="diag_reg"):
        predict.gp_inference(np.eye(4), y, diag_reg=-1.0)("ntk", np.ones((1, 4)))
    with pytest.raises(np.linalg.LinAlgError, match="diag_reg"):
        predict.gp_inference(np.zeros((4, 4)), y)("ntk", np.ones((1, 4)))


def test_traced_middle_axis():
    # Outputs (n, 3, 2) with trace_axes=(1,): kernels (n, n, 2, 2), Θ ⊗ I over the middle axis.
    rng = np.random.default_rng(0)
    a = rng.standard_normal((10, 10))
    k_mat = a @ a.T + np.eye(10)  # (n·2, n·2), example-major
    k = k_mat.reshape(5, 2, 5, 2).transpose(0, 2, 1, 3)
    k_td_mat = rng.standard_normal((6, 10))  # 3 test examples
    k_td = k_td_mat.reshape(3, 2, 5, 2).transpose(0, 2, 1, 3)
    y = rng.standard_normal((5, 3, 2))
    mean = predict.gp_inference(k, y, trace_axes=(1,))("ntk", k_td)
    assert mean.shape == (3, 3, 2)
    for c in range(3):
        want = (k_td_mat @ np.linalg.solve(k_mat, y[:, c, :].ravel())).reshape(3, 2)
        assert rel_error(mean[:, c, :], want) < EXACT
    # The same layout through the ODE: MSE gradient flow is exp(−ηΘt/N) on each column.
    mse = lambda fx, yy: 0.5 * jnp.sum((fx - yy) ** 2) / yy.size
    fn = predict.gradient_descent(mse, k, y, 0.5, trace_axes=(1,), rtol=1e-11, atol=1e-11)
    got = fn(np.array([4.0, 4.0]), 0.0)[0]
    e = scipy.linalg.expm(-0.5 * 4.0 * k_mat / y.size)
    for c in range(3):
        want = (y[:, c, :].ravel() - e @ y[:, c, :].ravel()).reshape(5, 2)
        assert rel_error(got[:, c, :], want) < 1e-8  # ODE tolerance 1e-11
