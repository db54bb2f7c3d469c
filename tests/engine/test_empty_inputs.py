"""An empty x1 or x2 gives an empty kernel of the right shape with every method (never a
ZeroDivisionError from the cost model); where nothing can be computed, the error names `x`."""

import jax
import jax.numpy as jnp
import pytest

import ntk_zoo

METHODS = ["jacobian_contraction", "ntk_vector_products", "structured_derivatives", "auto"]


def f(params, x):
    return jnp.tanh(x @ params["w"]) @ params["v"]


PARAMS = {"w": jnp.ones((5, 3)) / 5, "v": jnp.ones((3, 2)) / 3}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("vmap_axes", [0, None])
@pytest.mark.parametrize(
    ("trace_axes", "diagonal_axes", "shape"),
    [((-1,), (), (0, 4)), ((), (), (0, 4, 2, 2)), ((), (-1,), (0, 4, 2))],
)
def test_empty_x1_gives_an_empty_kernel(method, vmap_axes, trace_axes, diagonal_axes, shape):
    kernel_fn = ntk_zoo.ntk_fn(
        f, method=method, vmap_axes=vmap_axes, trace_axes=trace_axes, diagonal_axes=diagonal_axes
    )
    empty, x = jnp.ones((0, 5)), jnp.ones((4, 5))
    alone = kernel_fn(empty, None, PARAMS)
    assert alone.shape == (0, 0, *shape[2:]) and alone.dtype == PARAMS["w"].dtype
    assert kernel_fn(empty, x, PARAMS).shape == shape
    assert kernel_fn(x, empty, PARAMS).shape == (4, 0, *shape[2:])


def test_auto_chooses_on_empty_inputs():
    method, costs = ntk_zoo.ntk_fn(f, vmap_axes=0).choose(jnp.ones((0, 5)), None, PARAMS)
    assert method in ntk_zoo.Method and set(costs) == set(METHODS[:3])


def test_matrix_free_spectrum_of_no_examples_names_x():
    with pytest.raises(ValueError, match="`x` holds no examples"):
        ntk_zoo.spectrum.ntk_operator(f, PARAMS, jnp.ones((0, 5)))


def test_empty_pytree_input_under_jit():
    kernel_fn = jax.jit(ntk_zoo.ntk_fn(lambda p, x: f(p, x["a"]), vmap_axes=0))
    assert kernel_fn({"a": jnp.ones((0, 5))}, None, PARAMS).shape == (0, 0)
