"""Bad input gets an error that names the argument and the fix, one test per mistake."""

import jax.numpy as jnp
import numpy as np
import pytest

import ntk_zoo
from tests.cases import CASES

MLP = next(c for c in CASES if c.name == "mlp")


def _call(f=MLP.f, x1=MLP.x1, x2=MLP.x2, params=MLP.params, **ntk_kwargs):
    return ntk_zoo.ntk_fn(f, **ntk_kwargs)(x1, x2, params)


@pytest.mark.parametrize("vmap_axes", [0, None], ids=["vmap", "full"])
def test_x1_x2_with_different_example_shapes(vmap_axes):
    with pytest.raises(ValueError, match="x2"):
        _call(x2=np.ones((2, 5)), vmap_axes=vmap_axes)


def test_x1_x2_with_different_ranks():
    with pytest.raises(ValueError, match="different ranks"):
        _call(x2=np.ones((2, 4, 1)))


def test_x1_x2_with_different_structures():
    with pytest.raises(ValueError, match="different structures"):
        _call(x2=(MLP.x2,))


@pytest.mark.parametrize("vmap_axes", [2, -3, (0, 2, {})], ids=["in", "negative", "out"])
def test_vmap_axes_out_of_range(vmap_axes):
    with pytest.raises(ValueError, match="out of range"):
        _call(vmap_axes=vmap_axes)


def test_vmap_axes_inconsistent_with_output():
    # The output (n, 3) has its batch on axis 0; axis 1 has size 3, not n = 3 + 1.
    x = np.ones((4, 4))
    with pytest.raises(ValueError, match="inconsistent with the output"):
        _call(x1=x, x2=None, vmap_axes=(0, 1, {}))


def test_vmap_axes_not_a_prefix_of_inputs():
    with pytest.raises(ValueError, match="pytree prefix"):
        _call(vmap_axes=((0, 0), 0, {}))


def test_vmap_axes_mapping_nothing():
    with pytest.raises(ValueError, match="maps no input"):
        _call(vmap_axes=(None, 0, {}))


def test_trace_and_diagonal_axes_overlap():
    with pytest.raises(ValueError, match="overlap"):
        _call(trace_axes=(-1,), diagonal_axes=(1,))


def test_trace_axes_out_of_range():
    with pytest.raises(ValueError, match=r"trace_axes.*out of range"):
        _call(trace_axes=(2,))


def test_diagonal_axis_with_unequal_sizes():
    with pytest.raises(ValueError, match="diagonal but has size 3 for x1 and 2 for x2"):
        _call(trace_axes=(), diagonal_axes=(0,))


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_])
def test_integer_or_boolean_param_leaf_names_its_path(dtype):
    params = {**MLP.params, "b2": jnp.zeros(3, dtype)}
    with pytest.raises(TypeError, match=r"params\['b2'\].*non-floating"):
        _call(params=params)


@pytest.mark.parametrize("leaf", ["a string", 1.5, object()], ids=["str", "float", "object"])
def test_non_array_param_leaf(leaf):
    params = {**MLP.params, "extra": leaf}
    with pytest.raises(TypeError, match=r"params\['extra'\].*not an array"):
        _call(params=params)


def test_params_with_nan():
    params = {**MLP.params, "b0": jnp.full(6, jnp.nan)}
    with pytest.raises(ValueError, match=r"params\['b0'\] contains NaN"):
        _call(params=params)


def test_empty_params():
    with pytest.raises(ValueError, match="no array leaves"):
        _call(params={})


def test_missing_params():
    with pytest.raises(TypeError, match="needs `params`"):
        ntk_zoo.ntk_fn(MLP.f)(MLP.x1, None)


def test_non_float_output():
    f = lambda p, x: jnp.argmax(MLP.f(p, x), axis=-1, keepdims=True)
    with pytest.raises(TypeError, match="floating outputs"):
        _call(f=f)


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError, match=r"'jacobian_contraction'.*'auto'"):
        ntk_zoo.ntk_fn(MLP.f, method="fastest")


def test_non_callable_f():
    with pytest.raises(TypeError, match="callable"):
        ntk_zoo.ntk_fn("mlp")


def test_method_accepts_enum_and_string():
    a = _call(method=ntk_zoo.Method.JACOBIAN_CONTRACTION)
    b = _call(method="jacobian_contraction")
    np.testing.assert_array_equal(a, b)


def test_flax_or_haiku_model_object_points_to_the_adapters():
    import flax.linen as nn
    import haiku as hk

    class Linear(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(x)

    for model in (Linear(), hk.transform(lambda x: hk.Linear(2)(x))):
        with pytest.raises(TypeError, match=r"wrap it first: ntk_zoo\.from_linen"):
            _call(f=model)
