"""The matrix-free alignment equals the dense one (exact Frobenius) or estimates it (Hutchinson)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntk_zoo import ntk_fn
from ntk_zoo.dynamics import kernel_alignment, kernel_alignment_matrix_free
from ntk_zoo.spectrum import ntk_operator


def _mlp(p, x):
    return jnp.tanh(x @ p["w1"]) @ p["w2"]


@pytest.fixture(scope="module")
def problem():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = {
        "w1": jax.random.normal(k1, (5, 7), jnp.float64) / np.sqrt(5),
        "w2": jax.random.normal(k2, (7, 3), jnp.float64) / np.sqrt(7),
    }
    x = jax.random.normal(k3, (11, 5), jnp.float64)
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 0, 1, 2, 2])
    return params, x, labels


@pytest.mark.parametrize(
    "trace_axes, centered",
    [((-1,), True), ((-1,), False), ((), True)],
    ids=["nn-centred", "nn-uncentred", "nnoo-centred"],
)
def test_exact_matrix_free_equals_dense(problem, trace_axes, centered):
    params, x, labels = problem
    dense = kernel_alignment(
        ntk_fn(_mlp, trace_axes=trace_axes)(x, None, params), labels, centered=centered
    )
    op = ntk_operator(_mlp, params, x, block_size=4, trace_axes=trace_axes)  # 3 blocks, padded
    free = kernel_alignment_matrix_free(op, labels, centered=centered, chunk=5)  # 11 = 5+5+1
    assert free == pytest.approx(dense, rel=1e-10)


def test_hutchinson_estimate_is_close(problem):
    params, x, labels = problem
    dense = kernel_alignment(ntk_fn(_mlp)(x, None, params), labels)
    op = ntk_operator(_mlp, params, x, block_size=4)
    estimate = kernel_alignment_matrix_free(op, labels, frobenius="hutchinson", num_probes=400)
    # ‖Θ_c‖_F² from 400 Rademacher probes: relative standard error ≤ √(2/400) ≈ 7 % on the
    # square, so ≤ 3.5 % on the alignment; 15 % is over four standard errors (and the seed is
    # fixed, so the test is deterministic).
    assert estimate == pytest.approx(dense, rel=0.15)


def test_errors(problem):
    params, x, labels = problem
    op = ntk_operator(_mlp, params, x)
    with pytest.raises(ValueError, match="frobenius"):
        kernel_alignment_matrix_free(op, labels, frobenius="lanczos")
    with pytest.raises(TypeError, match="NtkOperator"):
        kernel_alignment_matrix_free(np.eye(11), labels)
    with pytest.raises(ValueError, match="over 11 examples"):
        kernel_alignment_matrix_free(op, labels[:5])
