import jax
import jax.numpy as jnp
import numpy as np
import pytest

from architectures.jax import mlp


@pytest.mark.parametrize("bias", [True, False])
def test_shapes_and_param_count(bias):
    params = mlp.init(jax.random.key(0), 5, [7, 3], 2, bias=bias)
    assert sum(a.size for a in jax.tree.leaves(params)) == 5 * 7 + 7 * 3 + 3 * 2 + bias * (
        7 + 3 + 2
    )
    assert mlp.apply(params, jnp.ones((4, 5))).shape == (4, 2)


def test_parameterisations_agree_as_functions():
    key, x = jax.random.key(1), jnp.linspace(-1, 1, 12).reshape(3, 4)
    ntk = mlp.init(key, 4, [6], 2, parameterization="ntk")
    std = mlp.init(key, 4, [6], 2, parameterization="standard")
    np.testing.assert_allclose(
        mlp.apply(ntk, x, parameterization="ntk"),
        mlp.apply(std, x, parameterization="standard"),
        rtol=1e-6,
    )


def test_unknown_parameterisation():
    with pytest.raises(ValueError, match="parameterization must be one of"):
        mlp.init(jax.random.key(0), 2, [2], 1, parameterization="mup")
