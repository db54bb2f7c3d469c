"""The float64 oracle: dense Jacobians of the whole batch by ``jax.jacrev``, contracted in NumPy.

Independent of the engine: no vmap, no per-leaf layout code; trace and diagonal axes are applied
by ``numpy.einsum`` index repetition on the full ``f(x1).shape + f(x2).shape`` kernel.
"""

from __future__ import annotations

import string

import jax
import numpy as np


def _flat_jacobian(f, params, x, kwargs):
    """Per output leaf: (output shape, Jacobian flattened to (out_size, n_params))."""
    key = (f, _fingerprint((params, x, kwargs)))
    if key not in _CACHE:
        _CACHE[key] = _flat_jacobian_uncached(f, params, x, kwargs)
    return _CACHE[key]


_CACHE: dict = {}


def _fingerprint(tree) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return (str(treedef), *((np.asarray(a).dtype.str, np.asarray(a).tobytes()) for a in leaves))


def _flat_jacobian_uncached(f, params, x, kwargs):
    jac = jax.jit(jax.jacrev(lambda p, x, kw: f(p, x, **kw)))(params, x, kwargs)
    fx = jax.eval_shape(lambda p: f(p, x, **kwargs), params)
    out_def = jax.tree.structure(fx)
    result = []
    for leaf, j in zip(jax.tree.leaves(fx), out_def.flatten_up_to(jac)):
        size = int(np.prod(leaf.shape))
        blocks = [np.asarray(b, np.float64).reshape(size, -1) for b in jax.tree.leaves(j)]
        result.append((leaf.shape, blocks))
    return out_def, result


def _both_jacobians(f, x1, x2, params, kwargs):
    """Flat Jacobians at x1 and x2; a 2-tuple kwarg is (value for x1, value for x2)."""
    pick = lambda v, i: v[i] if isinstance(v, tuple) and len(v) == 2 else v
    kw1 = {k: pick(v, 0) for k, v in kwargs.items()}
    kw2 = {k: pick(v, 1) for k, v in kwargs.items()}
    if x2 is None:
        x2, kw2 = x1, kw1
    out_def, j1 = _flat_jacobian(f, params, x1, kw1)
    return out_def, j1, _flat_jacobian(f, params, x2, kw2)[1]


def _reduce(full, ndim, trace, diagonal):
    letters = string.ascii_letters
    a = [letters[i] for i in range(ndim)]
    b = [letters[ndim + i] if i not in trace + diagonal else a[i] for i in range(ndim)]
    out = []
    for i in range(ndim):
        if i in diagonal:
            out.append(a[i])
        elif i not in trace:
            out += [a[i], b[i]]
    return np.einsum(f"{''.join(a + b)}->{''.join(out)}", full)


def oracle_ntk(f, x1, x2, params, *, trace_axes=(-1,), diagonal_axes=(), sum_params=True, **kwargs):
    out_def, j1, j2 = _both_jacobians(f, x1, x2, params, kwargs)
    kernels = []
    for (s1, b1), (s2, b2) in zip(j1, j2):
        nd = len(s1)
        canon = lambda axes, nd=nd: sorted({a % nd for a in np.atleast_1d(axes).tolist()})
        trace, diagonal = canon(trace_axes), canon(diagonal_axes)
        scale = np.prod([s1[i] for i in trace])
        per_leaf = [
            _reduce((u @ v.T).reshape(tuple(s1) + tuple(s2)), nd, trace, diagonal) / scale
            for u, v in zip(b1, b2)
        ]
        if sum_params:
            kernels.append(sum(per_leaf))
        else:
            kernels.append(jax.tree.unflatten(jax.tree.structure(params), per_leaf))
    return jax.tree.unflatten(out_def, kernels)


def rel_error(a, b) -> float:
    """max |a - b| / max |b| over all leaves (0 when both are all zeros)."""
    num, den = 0.0, 0.0
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
        assert u.shape == v.shape, (u.shape, v.shape)
        if u.size:
            num = max(num, float(np.max(np.abs(u - v))))
            den = max(den, float(np.max(np.abs(v))))
    return num / den if den else num


def oracle_vp(f, x1, x2, params, v, **kwargs):
    """``J(x1) J(x2)ᵀ v`` with dense Jacobians, cross terms between output leaves included."""
    out_def, j1, j2 = _both_jacobians(f, x1, x2, params, kwargs)
    jac1 = np.concatenate([np.concatenate(b, axis=1) for _, b in j1], axis=0)
    jac2 = np.concatenate([np.concatenate(b, axis=1) for _, b in j2], axis=0)
    flat_v = np.concatenate([np.asarray(u, np.float64).ravel() for u in jax.tree.leaves(v)])
    flat = jac1 @ (jac2.T @ flat_v)
    sizes = [int(np.prod(s)) for s, _ in j1]
    parts = np.split(flat, np.cumsum(sizes)[:-1])
    return jax.tree.unflatten(out_def, [p.reshape(s) for p, (s, _) in zip(parts, j1)])
