"""Primitive applications ``y = prim(w, consts)`` linear in a param ``w``: the shared grid for the
rule tests (each rule against the dense Jacobian) and the function grid (each as a model)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax


@dataclasses.dataclass(frozen=True)
class Prim:
    name: str  # test id
    primitive: str  # the primitive whose rule is exercised
    fn: Callable[..., Any]  # fn(w, *consts)
    w_shape: tuple[int, ...]
    consts: tuple[Any, ...] = ()  # arrays, or ("int", shape, high) for integer operands

    def make_consts(self, seed: int = 1) -> list[Any]:
        rng = np.random.default_rng(seed)
        out = []
        for c in self.consts:
            if isinstance(c, tuple) and c and c[0] == "int":
                out.append(rng.integers(0, c[2], size=c[1]).astype(np.int32))
            elif isinstance(c, tuple) and c and c[0] == "bool":
                out.append(rng.integers(0, 2, size=c[1]).astype(bool))
            else:
                out.append(rng.standard_normal(c))
        return out


PRIMS: list[Prim] = []


def add(*args, **kw):
    PRIMS.append(Prim(*args, **kw))


# --- dot_general: every dimension-number pattern with the param as lhs and as rhs ----------------
DOT_PATTERNS = [
    # (lhs shape, rhs shape, ((lc, rc), (lb, rb)))
    ((3, 4), (4, 5), (((1,), (0,)), ((), ()))),  # x @ W
    ((4, 3), (4, 5), (((0,), (0,)), ((), ()))),  # xᵀ @ W
    ((3, 4), (5, 4), (((1,), (1,)), ((), ()))),  # x @ Wᵀ
    ((4, 3), (5, 4), (((0,), (1,)), ((), ()))),
    ((3, 4, 2), (4, 2, 5), (((1, 2), (0, 1)), ((), ()))),  # two contracting dims
    ((3, 4, 2), (2, 5, 4), (((1, 2), (2, 0)), ((), ()))),  # contracting dims out of order
    ((2, 3, 4), (2, 4, 5), (((2,), (1,)), ((0,), (0,)))),  # batched matmul
    ((3, 2, 4), (4, 2, 5), (((2,), (0,)), ((1,), (1,)))),  # batch dims not leading
    ((2, 3, 4, 6), (2, 6, 4, 5), (((3,), (1,)), ((0, 2), (0, 2)))),  # two batch dims
    ((3,), (3,), (((0,), (0,)), ((), ()))),  # inner product
    ((3,), (4,), (((), ()), ((), ()))),  # outer product
    ((3, 4), (5,), (((), ()), ((), ()))),  # tensor product, no contraction
    ((2, 3), (2, 5), (((), ()), ((0,), (0,)))),  # batch only
    ((3, 4), (4,), (((1,), (0,)), ((), ()))),  # matrix-vector
]
for k, (ls, rs, dims) in enumerate(DOT_PATTERNS):
    add(f"dot{k}-lhs", "dot_general", lambda w, c, d=dims: lax.dot_general(w, c, d), ls, (rs,))
    add(f"dot{k}-rhs", "dot_general", lambda w, c, d=dims: lax.dot_general(c, w, d), rs, (ls,))

# --- conv_general_dilated: layouts, strides, padding, dilation, groups, param as kernel or image --
CONVS = [
    # name, lhs shape, rhs shape, dimension numbers, kwargs
    ("nhwc", (1, 5, 5, 2), (3, 3, 2, 3), ("NHWC", "HWIO", "NHWC"), {}),
    ("nchw", (2, 2, 5, 4), (3, 2, 3, 2), ("NCHW", "OIHW", "NCHW"), {}),
    ("stride", (1, 6, 5, 2), (3, 2, 2, 3), ("NHWC", "HWIO", "NHWC"), {"window_strides": (2, 2)}),
    ("same", (1, 5, 5, 2), (3, 3, 2, 2), ("NHWC", "HWIO", "NHWC"), {"padding": "SAME"}),
    ("pad", (1, 4, 4, 1), (2, 3, 1, 2), ("NHWC", "HWIO", "NHWC"), {"padding": ((1, 2), (0, 1))}),
    ("rhs-dil", (1, 6, 6, 2), (2, 2, 2, 2), ("NHWC", "HWIO", "NHWC"), {"rhs_dilation": (2, 1)}),
    (
        "lhs-dil",
        (1, 3, 3, 2),
        (2, 2, 2, 2),
        ("NHWC", "HWIO", "NHWC"),
        {"lhs_dilation": (2, 2), "padding": ((1, 0), (0, 1))},
    ),
    ("groups", (1, 4, 4, 4), (3, 3, 2, 6), ("NHWC", "HWIO", "NHWC"), {"feature_group_count": 2}),
    ("depthwise", (1, 4, 4, 3), (3, 3, 1, 3), ("NHWC", "HWIO", "NHWC"), {"feature_group_count": 3}),
    (
        "batch-groups",
        (4, 4, 4, 2),
        (2, 2, 2, 4),
        ("NHWC", "HWIO", "NHWC"),
        {"batch_group_count": 2},
    ),
    ("conv1d", (2, 7, 3), (3, 3, 4), ("NWC", "WIO", "NWC"), {"window_strides": (2,)}),
    ("conv3d", (1, 3, 4, 3, 2), (2, 2, 2, 2, 2), ("NDHWC", "DHWIO", "NDHWC"), {}),
    ("chw-out", (1, 4, 4, 2), (2, 2, 2, 3), ("NHWC", "HWIO", "NCHW"), {}),
]


def _conv(lhs, rhs, dn, kw):
    n_spatial = len(dn[0]) - 2
    kw = {"window_strides": (1,) * n_spatial, "padding": "VALID", **kw}
    return lax.conv_general_dilated(lhs, rhs, dimension_numbers=dn, **kw)


for name, ls, rs, dn, kw in CONVS:
    add(
        f"conv-{name}-kernel",
        "conv_general_dilated",
        lambda w, c, dn=dn, kw=kw: _conv(c, w, dn, kw),
        rs,
        (ls,),
    )
    add(
        f"conv-{name}-image",
        "conv_general_dilated",
        lambda w, c, dn=dn, kw=kw: _conv(w, c, dn, kw),
        ls,
        (rs,),
    )

# --- elementwise ---------------------------------------------------------------------------------
add("add", "add", lambda w, c: lax.add(w, c), (3, 4), ((3, 4),))
add("add-rhs", "add", lambda w, c: lax.add(c, w), (3, 4), ((3, 4),))
add("add-scalar-param", "add", lambda w, c: lax.add(c, lax.broadcast(w, ())), (), ((3, 4),))
add("sub-lhs", "sub", lambda w, c: lax.sub(w, c), (3, 4), ((3, 4),))
add("sub-rhs", "sub", lambda w, c: lax.sub(c, w), (3, 4), ((3, 4),))
add("neg", "neg", lambda w: lax.neg(w), (3, 4))
add("mul", "mul", lambda w, c: lax.mul(w, c), (3, 4), ((3, 4),))
add("mul-rhs", "mul", lambda w, c: lax.mul(c, w), (2, 3, 2), ((2, 3, 2),))
add("mul-scalar-const", "mul", lambda w: lax.mul(w, 2.5), (3, 4))
add("mul-scalar-param", "mul", lambda w, c: w * c, (), ((3, 4),))
add("add-size1-broadcast", "add", lambda w, c: lax.add(w, c), (1, 4), ((3, 4),))
add("sub-size1-broadcast", "sub", lambda w, c: lax.sub(c, w), (3, 1, 2), ((3, 4, 2),))
add("mul-size1-param", "mul", lambda w, c: lax.mul(w, c), (3, 1), ((3, 4),))
add("mul-size1-const", "mul", lambda w, c: lax.mul(c, w), (3, 4), ((1, 4),))
add("mul-both-size1", "mul", lambda w, c: lax.mul(w, c), (3, 1, 2), ((1, 4, 2),))
add("div", "div", lambda w, c: lax.div(w, c), (3, 4), ((3, 4),))
add("div-scalar", "div", lambda w: lax.div(w, 4.0), (3,))
add("convert", "convert_element_type", lambda w: lax.convert_element_type(w, jnp.float32), (3, 2))
add("copy", "copy", lambda w: lax.copy_p.bind(w), (3, 2))
add(
    "select_n",
    "select_n",
    lambda w, c, s: lax.select_n(s, c, w),
    (3, 4),
    ((3, 4), ("bool", (3, 4))),
)
add(
    "select_n-case0",
    "select_n",
    lambda w, c, s: lax.select_n(s, w, c),
    (3, 4),
    ((3, 4), ("bool", (3, 4))),
)
add(
    "select_n-3way",
    "select_n",
    lambda w, c, s: lax.select_n(s, c, w, c),
    (3, 4),
    ((3, 4), ("int", (3, 4), 3)),
)

# --- shapes --------------------------------------------------------------------------------------
add(
    "broadcast-new-axes",
    "broadcast_in_dim",
    lambda w: lax.broadcast_in_dim(w, (2, 3, 4), (1,)),
    (3,),
)
add(
    "broadcast-unit-axis",
    "broadcast_in_dim",
    lambda w: lax.broadcast_in_dim(w, (2, 3, 4), (0, 1, 2)),
    (1, 3, 4),
)
add("reshape-merge", "reshape", lambda w: lax.reshape(w, (12,)), (3, 4))
add("reshape-split", "reshape", lambda w: lax.reshape(w, (2, 3, 2)), (3, 4))
add("reshape-unit", "reshape", lambda w: lax.reshape(w, (3, 1, 4)), (3, 4))
add("transpose", "transpose", lambda w: lax.transpose(w, (2, 0, 1)), (2, 3, 4))
add("squeeze", "squeeze", lambda w: lax.squeeze(w, (1,)), (3, 1, 4))
add("expand_dims", "broadcast_in_dim", lambda w: lax.expand_dims(w, (0, 2)), (3, 4))
add("concatenate-first", "concatenate", lambda w, c: lax.concatenate([w, c], 1), (3, 2), ((3, 4),))
add(
    "concatenate-middle",
    "concatenate",
    lambda w, c: lax.concatenate([c, w, c], 0),
    (2, 3),
    ((1, 3),),
)
add("pad", "pad", lambda w: lax.pad(w, 0.0, ((1, 2, 0), (0, 0, 0))), (3, 4))
add("pad-interior", "pad", lambda w: lax.pad(w, 0.0, ((0, 0, 1), (2, 1, 2))), (3, 3))
add("pad-negative", "pad", lambda w: lax.pad(w, 0.0, ((-1, 1, 0), (1, -2, 0))), (4, 4))
add("rev", "rev", lambda w: lax.rev(w, (0,)), (3, 4))
add("rev-both", "rev", lambda w: lax.rev(w, (0, 1)), (3, 4))
add(
    "reduce_sum",
    "reduce_sum",
    lambda w: lax.reduce_sum_p.bind(w, axes=(1,), out_sharding=None),
    (3, 4, 2),
)
add(
    "reduce_sum-all",
    "reduce_sum",
    lambda w: lax.reduce_sum_p.bind(w, axes=(0, 1), out_sharding=None),
    (3, 4),
)
add(
    "reduce_window_sum",
    "reduce_window_sum",
    lambda w: lax.reduce_window(w, 0.0, lax.add, (2, 2), (1, 1), "VALID"),
    (4, 5),
)
add(
    "reduce_window_sum-stride-pad",
    "reduce_window_sum",
    lambda w: lax.reduce_window(w, 0.0, lax.add, (1, 3, 2), (1, 2, 2), ((0, 0), (1, 1), (0, 1))),
    (2, 5, 4),
)
add("slice", "slice", lambda w: lax.slice(w, (1, 0), (3, 4)), (4, 4))
add("slice-strided", "slice", lambda w: lax.slice(w, (0, 1), (4, 4), (2, 2)), (4, 4))
add(
    "dynamic_slice",
    "dynamic_slice",
    lambda w, i: lax.dynamic_slice(w, (i[0] % 3, jnp.int32(0)), (2, 4)),
    (4, 4),
    (("int", (1,), 5),),
)
add(
    "dynamic_slice-clamped", "dynamic_slice", lambda w: lax.dynamic_slice(w, (7, 1), (2, 2)), (4, 4)
)
add(
    "dynamic_update_slice-update",
    "dynamic_update_slice",
    lambda w, c: lax.dynamic_update_slice(c, w, (1, 2)),
    (2, 2),
    ((4, 5),),
)
add(
    "dynamic_update_slice-operand",
    "dynamic_update_slice",
    lambda w, c: lax.dynamic_update_slice(w, c, (2, 1)),
    (4, 5),
    ((2, 2),),
)

# --- gather --------------------------------------------------------------------------------------
add("gather-embedding", "gather", lambda w, i: w[i], (7, 3), (("int", (5,), 7),))
add("gather-embedding-2d-ids", "gather", lambda w, i: w[i], (6, 2), (("int", (2, 3), 6),))
add("gather-columns", "gather", lambda w, i: w[:, i], (3, 6), (("int", (4,), 6),))
add(
    "gather-elements",
    "gather",
    lambda w, i, j: w[i, j],
    (4, 5),
    (("int", (3,), 4), ("int", (3,), 5)),
)
add(
    "gather-take-clip",
    "gather",
    lambda w, i: jnp.take(w, i, axis=0, mode="clip"),
    (5, 2),
    (("int", (4,), 8),),
)
add(
    "gather-take-fill",
    "gather",
    lambda w, i: jnp.take(w, i, axis=0, mode="fill", fill_value=0),
    (5, 2),
    (("int", (4,), 8),),
)
add("gather-repeated-ids", "gather", lambda w, i: w[i % 2], (4, 3), (("int", (6,), 4),))
