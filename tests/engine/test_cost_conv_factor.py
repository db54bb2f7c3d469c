"""auto's estimate of a convolution kernel's dense factor (issue 21): priced as what structured
derivatives runs; and Jacobian contraction's Gram priced as structured derivatives prices the
same product. No timings: every check is on estimated seconds with a fixed table.

With few output columns (``O·c_out ≤ 128``), unit strides and ``≥ 256`` output positions, the
convolution rule builds a kernel's per-example weight gradient as one matrix product per filter
offset of its input slices (``rules/_linear_algebra._kernel_factor``): no patch buffer, operands
that need no layout copy. The estimate priced it as the einsum of the structure (the patches
times the cotangents, both laid out) plus the patches' extraction, 2.3x what runs on the small
conv net's 16×16 leaves, and so picked Jacobian contraction where structured derivatives ran
1.13-1.47x faster (grid cells 5, 6, 13, 14).
"""

import math

import jax.numpy as jnp
import pytest
from jax import lax

import ntk_zoo
from ntk_zoo.core import PATCHES_SHARE, contraction_kind, count
from ntk_zoo.structured._contractor import Einsum, PricingContractor
from ntk_zoo.structured._cost import structured_cost
from ntk_zoo.structured._structure import FactorCost
from ntk_zoo.structured.rules import _linear_algebra
from tests.engine.fixed_table import TABLE, fixed_table  # noqa: F401 (the fixture)

N, SIDE, C_IN, C_OUT, OUTS = 3, 16, 2, 4, 5  # 256 positions, OUTS·c_out = 20: per offset

pytestmark = pytest.mark.usefixtures("fixed_table")


def _net(params, x):
    dims = ("NHWC", "HWIO", "NHWC")
    h = lax.conv_general_dilated(x, params["k"], (1, 1), "SAME", dimension_numbers=dims)
    return jnp.tanh(h).mean(axis=(1, 2)) @ params["w"]


def _problem():
    params = {"k": jnp.ones((3, 3, C_IN, C_OUT)) / 10, "w": jnp.ones((C_OUT, OUTS)) / 5}
    x = jnp.linspace(-1, 1, N * SIDE * SIDE * C_IN).reshape(N, SIDE, SIDE, C_IN)
    options = ntk_zoo.StructuredOptions(uses="jacobian")  # every leaf's factor formed densely
    kernel_fn = ntk_zoo.ntk_fn(_net, vmap_axes=0, structured=options)
    problem = kernel_fn.problem(x, None, params)
    return problem, count(problem, TABLE)


def _per_offset_cost() -> FactorCost:
    window, positions = 9, SIDE * SIDE
    out = OUTS * C_OUT * window * C_IN
    values = 2 * (window * positions * C_IN + OUTS * positions * C_OUT + out)
    return FactorCost(window, window * C_IN, positions, OUTS * C_OUT, values, out, reads_d=False)


def test_a_per_offset_factor_is_priced_as_its_products_without_the_patches(monkeypatch):
    problem, counts = _problem()
    per_offset = structured_cost(problem, counts)
    monkeypatch.setattr(_linear_algebra, "_PER_OFFSET_COLUMNS", 0)  # the stacked patches product
    stacked = structured_cost(problem, counts)
    # stacked: the factor is priced as the einsum of the structure (the patches times the
    # cotangents), the patches are extracted (at the patches rate) and written by the pass
    g = jnp.zeros((N, OUTS, 1, SIDE, SIDE, C_OUT))
    patches = jnp.zeros((N, 1, SIDE, SIDE, 3, 3, C_IN))
    size = counts.itemsize  # float64 under the tests' x64
    pricing = PricingContractor(TABLE, size, same=True, compute=False)
    labels_g, labels_p = [0, 1, 2, 3, 4, 5], [0, 2, 3, 4, 6, 7, 8]
    pricing.contract(Einsum([(g, labels_g), (patches, labels_p)], [0, 1, 6, 7, 8, 5], (1, 1)))
    einsum = pricing.seconds
    assert counts.patches1 == patches.size
    extract = patches.size * size / (PATCHES_SHARE * TABLE.memory_bytes)
    written = patches.size * size / TABLE.memory_bytes
    # per offset: the products it runs, batched over the examples, one step per offset
    c = _per_offset_cost()
    kind = contraction_kind(c.m, c.k, c.n)
    products = TABLE.seconds(2.0 * N * c.m * c.k * c.n, N * c.values * size, kind, steps=c.steps)
    assert stacked - per_offset == pytest.approx(einsum + extract + written - products, rel=1e-9)
    assert per_offset < stacked


def test_the_convolution_rule_says_what_its_factor_runs(monkeypatch):
    problem, _ = _problem()
    seen = []
    real = PricingContractor.factor

    def factor(self, einsum, formed, cost=None, d=None):
        seen.append((cost, None if d is None else d.shape))
        return real(self, einsum, formed, cost, d)

    monkeypatch.setattr(PricingContractor, "factor", factor)
    structured_cost(problem, count(problem, TABLE))
    patches = (N, 1, SIDE, SIDE, 3, 3, C_IN)
    assert (_per_offset_cost(), patches) in seen
    assert [cost for cost, d in seen if d != patches] == [None]  # the dense head's: its einsum
    # the stacked product (more columns, or strides) is priced as the einsum (no cost given)
    seen.clear()
    monkeypatch.setattr(_linear_algebra, "_PER_OFFSET_COLUMNS", OUTS * C_OUT - 1)
    structured_cost(problem, count(problem, TABLE))
    assert [cost for cost, _ in seen] == [None, None]


def test_patches_a_structured_step_reads_are_still_charged():
    # The same patches array as the spared d of a per-offset factor and an operand of a
    # structured step (the leaf's uses partly kept structured): still made, still charged.
    d = jnp.zeros((2, 1, 4, 4, 3, 3, 2))
    g = jnp.zeros((2, 5, 1, 4, 4, 3))
    pricing = PricingContractor(TABLE, 4, same=True, compute=False)
    cost = FactorCost(9, 18, 16, 15, 100.0, 270, reads_d=False)
    formed = jnp.zeros((2, 5, 3, 3, 2, 3))
    spec = Einsum([(g, [0, 1, 2, 3, 4, 5]), (d, [0, 2, 3, 4, 6, 7, 8])], [0, 1, 6, 7, 8, 5], (1, 1))
    pricing.factor(spec, formed, cost, d)
    assert pricing.spared_values() == d.size
    assert id(d) not in pricing.factors and id(g) in pricing.factors
    pricing.contract(Einsum([(d, [0, 2, 3, 4, 6, 7, 8]), (g, [0, 1, 2, 3, 4, 5])], [0, 1], (1, 1)))
    assert pricing.spared_values() == 0
    assert math.prod(formed.shape) // cost.out == 2  # the examples the factor is priced for


def test_jacobian_contraction_prices_its_gram_as_structured_derivatives_does():
    # One model of a Jacobian's Gram for both methods: Jacobian contraction's product of a
    # leaf's Jacobian with itself (x2=None) is priced as structured derivatives prices its dense
    # factor's Gram (read, laid out, read again: 3 values per Jacobian value, and the kernel
    # written). It read the Jacobian once, and so ranked ViT and conv cells with 8 logits and
    # trace_axes=(-1,) below structured derivatives, whose Grams paid the layout.
    from ntk_zoo.methods._jacobian_contraction import _cost

    params = {"w": jnp.ones((40, 30)) / 40}
    x = jnp.linspace(-1, 1, 6 * 40).reshape(6, 40)
    # labels: examples 0 and 2, outputs 1 and 3 (one label where traced), params 4
    for trace_axes, side2, out in (((), [2, 3, 4], [0, 1, 2, 3]), ((-1,), [2, 1, 4], [0, 2])):
        kernel_fn = ntk_zoo.ntk_fn(
            lambda p, x: jnp.tanh(x @ p["w"]), vmap_axes=0, trace_axes=trace_axes
        )
        problem = kernel_fn.problem(x, None, params)
        c = count(problem, TABLE)
        jac_values = sum(c.out1) * c.n_params + c.passes_y
        passes = c.phase((1 + 2 * c.o1) * c.fp1, jac_values, "pass")
        j = jnp.zeros((6, 30, 40 * 30))  # examples, outputs, params
        pricing = PricingContractor(TABLE, c.itemsize, same=True, compute=False)
        pricing.contract(Einsum([(j, [0, 1, 4]), (j, side2)], out, (1, 2)))
        assert _cost(problem, c) - passes == pytest.approx(pricing.seconds, rel=1e-12)
