"""The zoo's batched initialisation: bit for bit each framework's own, no silent fallback."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import architectures
from architectures import _batched_init, _build
from tests.cases import ZOO_IDS, ZOO_MODELS, zoo_case


def _initialiser(config, input_shape):
    framework, cls, kwargs = _build._lookup(config)
    return framework.initialiser(cls, kwargs, input_shape)[1]


def _assert_bits_equal(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        a, b = np.asarray(a).reshape(-1), np.asarray(b).reshape(-1)
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


def test_chunked_draws_equal_jax_random_normal(monkeypatch):
    # Small chunks, so that draws span several chunks and end inside one.
    monkeypatch.setattr(_batched_init, "CHUNK", 16)
    keys = [jax.random.key(s) for s in (0, 7)]
    cases = [(keys[0], (37,), np.float32), (keys[1], (3, 5, 2), np.float32)]
    cases += [(keys[0], (), np.float32), (keys[1], (4, 9), np.float64)]
    draws = [(np.asarray(jax.random.key_data(k)), s, np.dtype(d)) for k, s, d in cases]
    got = _batched_init.normal_draws(draws)
    want = [jax.random.normal(k, s, d) for k, s, d in cases]
    _assert_bits_equal(got, want)


@pytest.mark.parametrize("case_id", ZOO_IDS)
def test_batched_init_takes_the_batched_path_on_every_zoo_case(case_id):
    # zoo_case builds with the default init="batched", which falls back to lazy_init on
    # Unsupported; tests/architectures/test_zoo.py checks its params bit for bit against the
    # framework's own (eager) initialisation. Here batched_init is called directly (a fallback
    # would raise) and must give those same params. Under the tests' float64, linen draws in
    # float64 and NNX and Haiku in float32 (cast after): both dtypes of the draw program.
    model, framework = case_id.split("-")
    init = _initialiser({**ZOO_MODELS[model], "framework": framework}, (4, 4, 1))
    cast = lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a
    example = jax.ShapeDtypeStruct((1, 4, 4, 1), jnp.float32)
    variables = _batched_init.batched_init(
        lambda key, x: jax.tree.map(cast, init(key, x)), jax.random.key(0), example
    )
    params = _build._FRAMEWORKS[framework].params(variables)
    _assert_bits_equal(params, zoo_case(case_id).params)


def test_unsupported_initialisers_fall_back_to_lazy_init():
    config = {**ZOO_MODELS["mlp"], "framework": "linen"}
    key = jax.random.key(0, impl="rbg")  # not Threefry: the chunked draws would be wrong
    init = _initialiser(config, (4, 4, 1))
    example = jax.ShapeDtypeStruct((1, 4, 4, 1), jnp.float32)
    with pytest.raises(_batched_init.Unsupported, match="Threefry"):
        _batched_init.batched_init(init, key, example)
    built, eager = (
        architectures.build(config, key=key, input_shape=(4, 4, 1), init=init)
        for init in ("batched", "eager")
    )
    _assert_bits_equal(built.params, eager.params)


@pytest.mark.parametrize(
    "config,input_shape",
    [
        ({"family": "wide_resnet", "depth": 28, "width": 10}, (32, 32, 3)),
        ({"family": "vit", "variant": "B/16", "num_classes": 1000}, (224, 224, 3)),
    ],
    ids=["WRN-28-10", "ViT-B16"],
)
def test_published_sizes_batch_every_draw_with_the_counted_shapes(config, input_shape):
    # The staged walk of the batched path (everything but the draws' values, which are left
    # pending) yields the variables eval_shape gives, hence param_count's published counts.
    init = _initialiser({**config, "framework": "linen"}, input_shape)
    example = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    closed, shapes = jax.make_jaxpr(init, return_shape=True)(jax.random.key(0), example)
    n_out = len(closed.jaxpr.outvars)
    values = _batched_init._walk(
        closed.jaxpr, closed.consts, [jax.random.key(0), _batched_init.UNKNOWN], [True] * n_out
    )
    assert not any(v is _batched_init.UNKNOWN for v in values)
    paths, _ = jax.tree_util.tree_flatten_with_path(shapes)
    names = [jax.tree_util.keystr(path) for path, _ in paths]
    drawn = [isinstance(v, _batched_init._Pending) for v in values]
    want_drawn = [name.endswith(("['kernel']", "['pos_embedding']")) for name in names]
    assert drawn == want_drawn, names  # every normal draw is batched, nothing else is pending

    def shape(v):
        if isinstance(v, _batched_init._Draw):
            return v.shape
        return v.eqn.outvars[v.index].aval.shape if isinstance(v, _batched_init._Op) else v.shape

    assert [shape(v) for v in values] == [x.shape for _, x in paths]
    count = sum(
        int(np.prod(shape(v)))
        for v, name in zip(values, names, strict=True)
        if name.startswith("['params']")
    )
    assert count == architectures.param_count(config, input_shape)
