"""Control flow as structure: params used inside ``scan`` bodies (stacked along the scanned
axis, broadcast to every step, or both), ``cond`` / ``switch`` branches, static ``fori_loop`` /
``while_loop`` and remat bodies, each against the float64 oracle; a stacked leaf's per-leaf
kernel is one entry (the sum over its layers); the scanned models use no fallback; a
``while_loop`` whose trip count depends on the data keeps its exact fallback and warns once."""

from __future__ import annotations

import math
import os
import re
import tempfile
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.ad_checkpoint import checkpoint_name

import ntk_zoo
from ntk_zoo.structured import _factors, _warnings
from tests.oracle import oracle_ntk, rel_error

EXACT = 1e-10
D, L, T = 3, 3, 2  # width, layers, tokens
RNG = np.random.default_rng(0)
PARAMS = {
    "W": RNG.standard_normal((L, D, D)) / 2,  # stacked: one (D, D) slice per layer
    "b": RNG.standard_normal((L, D)) / 4,
    "U": RNG.standard_normal((D, D)) / 2,  # shared by every step
    "r": RNG.standard_normal((D, 2)),
}
X1 = RNG.standard_normal((2, T, D))
X2 = RNG.standard_normal((3, T, D))


def _layer(h, w, b):
    return jnp.tanh(h @ w + b)


def scan_stacked(p, x):  # the layer-stack pattern: xs are the stacked weights
    h, _ = lax.scan(lambda h, wb: (_layer(h, *wb), None), x.mean(-2), (p["W"], p["b"]))
    return h @ p["r"]


def scan_shared(p, x):  # an RNN: one weight for every step, the tokens scanned
    h, _ = lax.scan(lambda h, xt: (jnp.tanh(h @ p["U"] + xt), None), jnp.zeros(D), x)
    return h @ p["r"]


def scan_both(p, x):  # stacked and shared weights, per-step outputs read too
    def body(h, wb):
        h = _layer(h, *wb) + jnp.sin(h @ p["U"])
        return h, h.sum()

    h, ys = lax.scan(body, x.mean(-2), (p["W"], p["b"]))
    return h @ p["r"] + ys.mean()


def scan_reverse_carries(p, x):  # two carries, reverse=True, stacked outputs
    def body(c, wb):
        h, g = c
        h2 = _layer(h, *wb) * g
        return (h2, jnp.cos(g @ p["U"])), h2

    (h, g), ys = lax.scan(body, (x[0], x[1]), (p["W"], p["b"]), reverse=True)
    return (h + g) @ p["r"] + ys[0] @ p["r"]


def scan_length_one(p, x):
    h, _ = lax.scan(lambda h, wb: (_layer(h, *wb), None), x[0], (p["W"][:1], p["b"][:1]))
    return h @ p["r"]


def scan_nested(p, x):  # an outer scan over token pairs, an inner one over the layers
    def outer(h, xt):
        inner = lambda g, wb: (_layer(g + xt, *wb), None)
        g, _ = lax.scan(inner, h, (p["W"], p["b"]), unroll=2)
        return g @ p["U"], None

    h, _ = lax.scan(outer, jnp.zeros(D), x)
    return h @ p["r"]


def scan_remat_named(p, x):  # remat bodies with a names policy, as nn.remat + nn.scan write it
    policy = jax.checkpoint_policies.save_only_these_names("pre")

    @jax.checkpoint
    def body(h, wb):
        return jnp.tanh(checkpoint_name(h @ wb[0], "pre") + wb[1]), None

    body = jax.checkpoint(body, policy=policy)
    h, _ = lax.scan(body, x.mean(-2), (p["W"], p["b"]))
    return h @ p["r"]


def branches(p, x):  # cond and switch on a per-example predicate
    h = x.mean(-2)
    h = lax.cond(h.sum() > 0, lambda h: jnp.sin(h @ p["U"]), lambda h: h @ p["W"][0], h)
    k = (jnp.abs(h[0]) * 7).astype(jnp.int32) % 3
    h = lax.switch(k, [lambda h, i=i: h @ p["W"][i] + p["b"][i] for i in range(3)], h)
    return h @ p["r"]


def fori_static(p, x):  # constant bounds: a scan
    h = lax.fori_loop(0, L, lambda i, h: _layer(h, p["W"][i], p["b"][i]), x.mean(-2))
    return h @ p["r"]


def while_static(p, x):  # a counter from a constant to a literal bound
    body = lambda c: (c[0] + 1, jnp.tanh(c[1] @ p["U"]) + p["b"][0])
    _, h = lax.while_loop(lambda c: c[0] < 3, body, (0, x.mean(-2)))
    return h @ p["r"]


def while_dynamic(p, x):  # the trip count depends on the input
    n = (jnp.abs(x.sum()) * 2).astype(jnp.int32) % 3 + 1
    _, h = lax.while_loop(lambda c: c[0] < n, lambda c: (c[0] + 1, c[1] @ p["U"]), (0, x[0]))
    return h @ p["r"]


PER_EXAMPLE = [
    scan_stacked,
    scan_shared,
    scan_both,
    scan_reverse_carries,
    scan_length_one,
    scan_nested,
    scan_remat_named,
    branches,
    fori_static,
]
WHOLE_BATCH = (scan_stacked, scan_reverse_carries, branches)
SCANNED = [scan_stacked, scan_shared, scan_both, scan_reverse_carries, scan_nested]


def _batched(g):
    return jax.vmap(g, in_axes=(None, 0))


def _forward_oracle(f, x1, x2):
    """The full kernel ``(n1, n2, o, o)`` from dense forward-mode Jacobians (``jax.jacrev``,
    the oracle's, cannot differentiate a ``while_loop``)."""
    j1, j2 = (jax.jacfwd(f)(PARAMS, x) for x in (x1, x2))
    return sum(
        jnp.einsum("ao...,bp...->abop", a, b)
        for a, b in zip(jax.tree.leaves(j1), jax.tree.leaves(j2))
    )


def _sd(f, x2, method="structured_derivatives", **kw):
    return ntk_zoo.ntk_fn(f, method=method, **kw)(X1, x2, PARAMS)


@pytest.mark.parametrize("g", PER_EXAMPLE, ids=[g.__name__ for g in PER_EXAMPLE])
def test_structured_derivatives_exact(g):
    f = _batched(g)
    # per example (the predicates batched under vmap), x2 given, full logits, per leaf
    got = _sd(f, X2, vmap_axes=0, trace_axes=(), sum_params=False)
    want = oracle_ntk(f, X1, X2, PARAMS, trace_axes=(), sum_params=False)
    assert rel_error(got, want) <= EXACT
    if g not in WHOLE_BATCH:  # the other layouts: on a few models, to keep the suite short
        return
    # the whole batch at once (vmap's select_n for the branches), x2=None, traced, summed
    got = jax.jit(lambda x: _sd(f, None, trace_axes=(-1,)))(X1)
    assert rel_error(got, oracle_ntk(f, X1, None, PARAMS, trace_axes=(-1,))) <= EXACT


@pytest.mark.parametrize("g", [scan_both, branches], ids=["scan_both", "branches"])
def test_auto_exact(g):
    f = _batched(g)
    got = _sd(f, X2, method="auto", vmap_axes=0, trace_axes=())
    assert rel_error(got, oracle_ntk(f, X1, X2, PARAMS, trace_axes=())) <= EXACT


def test_a_stacked_leaf_is_one_entry_the_sum_over_its_layers():
    f = _batched(scan_stacked)
    got = _sd(f, X2, vmap_axes=0, trace_axes=(), sum_params=False)["W"]
    layers = [
        oracle_ntk(
            lambda q, x, i=i: f({**PARAMS, "W": jnp.asarray(PARAMS["W"]).at[i].set(q)}, x),
            X1,
            X2,
            PARAMS["W"][i],
            trace_axes=(),
        )
        for i in range(L)
    ]
    assert got.shape == layers[0].shape
    assert rel_error(got, sum(layers)) <= EXACT


@pytest.mark.parametrize("g", SCANNED, ids=[g.__name__ for g in SCANNED])
def test_scanned_params_get_structure_not_the_fallback(g):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback would warn
        _, leaves = _factors.record(lambda p: g(p, X1[0]), PARAMS)
    uses = [use for leaf in leaves for use in leaf.uses]
    assert uses and not any(use.pullback for use in uses)
    # the stacked weight is split into one part per layer (not where the layers are read
    # once per token: slices that overlap stay uses of the whole leaf, with structure)
    stacked = sorted(PARAMS).index("W")
    parts = sum(leaf.owner == stacked for leaf in leaves)
    assert parts == {scan_shared: 1, scan_nested: 1}.get(g, L)


def test_static_while_loop_is_unrolled():
    f = _batched(while_static)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback
        got = _sd(f, X2, vmap_axes=0, trace_axes=())
        _, leaves = _factors.record(lambda p: while_static(p, X1[0]), PARAMS)
    assert not any(use.pullback for leaf in leaves for use in leaf.uses)
    assert rel_error(got, _forward_oracle(f, X1, X2)) <= EXACT


def test_dynamic_while_loop_warns_and_stays_exact(monkeypatch):
    monkeypatch.setattr(_warnings, "_WARNED", set())  # warn_once: as in a fresh process
    f = _batched(while_dynamic)
    with pytest.warns(UserWarning, match="while_loop"):
        got = _sd(f, X2, vmap_axes=0, trace_axes=())
    assert rel_error(got, _forward_oracle(f, X1, X2)) <= EXACT


@pytest.mark.parametrize("vmap_axes", [None, 0], ids=["one-predicate", "per-example"])
def test_an_untaken_branch_whose_derivative_is_nan_leaves_the_kernel_exact(vmap_axes):
    # cond becomes select_n over both branches: sqrt's derivative is NaN where the branch is not
    # taken (h < 0), and must not reach the kernel through a 0 · NaN product.
    def f(p, x):
        h = x @ p["w"]
        pred = jnp.sum(h) > 0
        return lax.cond(pred, jnp.sqrt, jnp.tanh, h) @ p["v"]

    rng = np.random.default_rng(0)
    params = {"w": -np.abs(rng.standard_normal((4, 3))), "v": rng.standard_normal((3, 2))}
    x1, x2 = np.abs(rng.standard_normal((5, 4))), np.abs(rng.standard_normal((2, 4)))
    got = ntk_zoo.ntk_fn(f, method="structured_derivatives", vmap_axes=vmap_axes)(x1, x2, params)
    assert np.isfinite(np.asarray(got)).all()
    assert rel_error(got, oracle_ntk(f, x1, x2, params)) <= EXACT


def _distinct_kernels(compiled: str) -> int:
    """The fused computations that the entry of an XLA:CPU program calls, counted once per
    distinct body (names and metadata aside): XLA:CPU compiles one kernel per distinct body."""
    bodies = {}
    for block in re.split(r"\n(?=%\S+ |ENTRY )", compiled):
        name = re.match(r"%(\S+) ", block)
        if name:
            body = re.sub(r", metadata=\{[^}]*\}", "", block.split("{", 1)[1])
            bodies[name.group(1)] = re.sub(r"%[\w.\-]+", "%v", body)
    entry = compiled[compiled.index("ENTRY") :]
    return len({bodies[c] for c in re.findall(r"calls=%([\w.\-]+)", entry)})


def _stack(depth: int, width: int = 8) -> tuple[dict, np.ndarray]:
    """A residual stack written both ways, ``name -> (f, params)``, and its inputs."""
    rng = np.random.default_rng(0)
    stacked = {
        "W": rng.standard_normal((depth, width, width)),
        "b": rng.standard_normal((depth, width)),
    }
    layer = lambda h, w, b: h + jnp.tanh(h @ w + b) * jnp.cos(b)

    def scanned(p, x):
        return lax.scan(lambda h, wb: (layer(h, *wb), None), x, (p["W"], p["b"]))[0]

    def unrolled(p, x):
        for w, b in p:
            x = layer(x, w, b)
        return x

    per_layer = [(stacked["W"][i], stacked["b"][i]) for i in range(depth)]
    x = rng.standard_normal((3, width))
    return {"scanned": (scanned, stacked), "unrolled": (unrolled, per_layer)}, x


def _lowered_sd(g, params, x, sum_params: bool = True):
    kernel_fn = ntk_zoo.ntk_fn(
        _batched(g),
        method="structured_derivatives",
        vmap_axes=0,
        trace_axes=(),
        sum_params=sum_params,
    )
    return jax.jit(kernel_fn).lower(x, None, params)


def test_a_scanned_stack_compiles_each_kernel_once_as_the_unrolled_one_does():
    # The unrolled scan reads layer l's slice of a stacked param at an index XLA cannot see, so
    # the fusions of every layer are identical and compile once, as the unrolled model's do; a
    # static slice W[l] fused into them made each layer's kernels distinct (depth x as many).
    models, x = _stack(depth=6)
    counts = {
        name: _distinct_kernels(_lowered_sd(g, params, x).compile().as_text())
        for name, (g, params) in models.items()
    }
    # a few more: the sort's key and a dynamic_slice copy per stacked dot operand's shape (the
    # sort's constant rows are not splats, which XLA made one more broadcast kernel: + 4 then)
    assert counts["scanned"] <= counts["unrolled"] + 3, counts


def _simplifier_passes(lowered) -> int:
    """How many times XLA ran its simplification pipeline (a fixed-point loop over the whole
    program) when compiling ``lowered``: one dump per run of its ``algsimp`` pass."""
    with tempfile.TemporaryDirectory() as d:
        lowered.compile(compiler_options={"xla_dump_to": d, "xla_dump_hlo_pass_re": "algsimp"})
        return sum(".simplification.after_algsimp" in name for name in os.listdir(d))


def test_a_scanned_stack_runs_the_xla_simplifier_about_as_often_as_the_unrolled_one():
    # A stacked leaf's kernel is the sum of its layers' parts, each a dot's result behind the
    # same reshapes and transposes; XLA's simplifier moves those below one add of a chain per
    # run of its loop, so a chain of L parts ran it L + 1 times over the whole program (9 at
    # depth 8, against 2 unrolled). The parts are added as a balanced tree: about log2(L) + 2
    # (per-leaf kernels, ``sum_params=False``).
    depth = 8
    models, x = _stack(depth)
    passes = {
        name: _simplifier_passes(_lowered_sd(g, p, x, sum_params=False))
        for name, (g, p) in models.items()
    }
    assert passes["scanned"] <= passes["unrolled"] + math.ceil(math.log2(depth)) + 1, passes


def test_a_scanned_stack_summed_over_params_runs_the_xla_simplifier_as_the_unrolled_one():
    # Summed over params, the parts are added layer by layer (W_0, b_0, W_1, b_1, ...), as the
    # unrolled model's per-layer leaves are: next to a part of another form (a bias's Gram) no
    # reshape sinks, so XLA runs its simplifier as often as on the unrolled model (2 here,
    # against 5 when each stacked leaf's parts were summed first).
    models, x = _stack(depth=8)
    passes = {name: _simplifier_passes(_lowered_sd(g, p, x)) for name, (g, p) in models.items()}
    assert passes["scanned"] <= passes["unrolled"], passes


def test_a_weight_shared_by_every_step_runs_the_xla_simplifier_about_log2_steps_times():
    # An RNN's weight has one use per step, summed into one Jacobian factor per example; added
    # as a chain, XLA's simplifier ran once more per step (9 times at 8 steps, 3 at 1 step).
    def runs(steps: int) -> int:
        rng = np.random.default_rng(0)
        p = {"U": rng.standard_normal((8, 8)) / 3, "r": rng.standard_normal((8, 2))}

        def rnn(p, x):
            h, _ = lax.scan(lambda h, xt: (jnp.tanh(h @ p["U"] + xt), None), jnp.zeros(8), x)
            return h @ p["r"]

        return _simplifier_passes(_lowered_sd(rnn, p, rng.standard_normal((3, steps, 8))))

    steps = 8
    assert runs(steps) <= runs(1) + math.ceil(math.log2(steps)), (runs(steps), runs(1))


def test_tracing_structured_derivatives_prints_no_jaxpr(monkeypatch):
    # ``jit`` names the function it traces, and a ``jax.linearize`` result (a ``Partial`` over
    # the linear jaxpr, without a code object) by its ``str``: the whole linear program was
    # pretty-printed on every trace (3.6 ms of the scanned MLP d=12's ~120 ms).
    from ntk_zoo import _compat

    printed = []

    def counting(self):
        printed.append(type(self).__name__)
        return "<jaxpr>"

    for cls in (_compat.Jaxpr, _compat.ClosedJaxpr):
        monkeypatch.setattr(cls, "__str__", counting)
        monkeypatch.setattr(cls, "__repr__", counting)
    models, x = _stack(depth=3)
    for g, params in models.values():
        _lowered_sd(g, params, x)
    assert not printed, printed


def test_index_leading_reads_a_row_by_a_static_or_a_traced_index():
    from ntk_zoo import _compat

    x = jnp.arange(24.0).reshape(4, 3, 2)
    for i in range(4):
        np.testing.assert_array_equal(_compat.index_leading(x, i), x[i])
        np.testing.assert_array_equal(jax.jit(_compat.index_leading)(x, jnp.int32(i)), x[i])
    eqns = jax.make_jaxpr(_compat.index_leading)(x, jnp.int32(1)).eqns
    assert [e.primitive.name for e in eqns] == ["dynamic_slice", "squeeze"]
    eqns = jax.make_jaxpr(lambda x: _compat.index_leading(x, 2))(x).eqns
    assert [e.primitive.name for e in eqns] == ["slice", "squeeze"]
    for i in (-1, -4, np.int64(-2)):  # a static negative index counts from the end
        np.testing.assert_array_equal(_compat.index_leading(x, i), x[i])
    for i in (4, -5):
        with pytest.raises(IndexError, match="row"):
            _compat.index_leading(x, i)


def test_tree_sum_adds_booleans_as_plus_does():
    from ntk_zoo.core import tree_sum

    a, b = jnp.array([True, False, False]), jnp.array([True, True, False])
    np.testing.assert_array_equal(tree_sum([a, b]), a + b)
