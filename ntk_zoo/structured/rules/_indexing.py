"""Rule for ``gather``: embedding lookups and integer indexing.

Every output element of a gather reads at most one element of the param, so ``∂y/∂w`` is a
selection: axes the gather copies whole (an embedding's feature axis) are identities, and the
rest is described by *which* param element each output reads. Two sides are then contracted by
comparing those indices (``T1 × T2`` token pairs), never by forming one-hot ``(T, vocab)``
matrices — the dense Jacobian of an embedding table is what exhausts memory otherwise.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from ntk_zoo.structured._ir import Eqn
from ntk_zoo.structured._registry import pullback, register
from ntk_zoo.structured._structure import Structure


@register("gather")
def gather(eqn: Eqn, idx: int, args: list[Any]) -> Structure:
    if idx != 0:
        return pullback(eqn, idx, args)
    dims = eqn.params["dimension_numbers"]
    slice_sizes = eqn.params["slice_sizes"]
    w, y = eqn.inputs[0], eqn.outputs[0]
    kept = [
        b
        for b in range(w.ndim)
        if b not in dims.collapsed_slice_dims and b not in dims.operand_batching_dims
    ]
    # Param axes copied whole land on the output's offset axes, in order: identities.
    trace = tuple(
        (a, b)
        for a, b in zip(dims.offset_dims, kept)
        if slice_sizes[b] == w.shape[b] and b not in dims.start_index_map
    )
    index_w = tuple(b for b in range(w.ndim) if b not in {b for _, b in trace})
    sizes = [w.shape[b] for b in index_w]
    # 1 + the flat position over ``index_w`` of each param element, constant along the rest;
    # gathered by the equation itself, so clipping and filling follow its own mode exactly.
    flat = jnp.arange(1, int(np.prod(sizes, dtype=np.int64)) + 1, dtype=jnp.int32)
    shape = [w.shape[b] if b in index_w else 1 for b in range(w.ndim)]
    source = jnp.broadcast_to(flat.reshape(shape), w.shape)
    params = dict(eqn.params)
    if "fill_value" in params:  # out-of-bounds reads (mode "fill") read nothing
        params["fill_value"] = 0
    src = eqn.primitive.bind(source, args[1], **params)
    dense_y = tuple(a for a in range(y.ndim) if a not in {a for a, _ in trace})
    src = src[tuple(0 if a not in dense_y else slice(None) for a in range(y.ndim))]
    return Structure(trace=trace, dense_y=dense_y, src=src, index_w=index_w)
