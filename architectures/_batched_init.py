"""Initialisation with every normal draw batched into one compiled program.

A model's initialiser ``init(key, x)`` is traced once to a jaxpr with ``x`` abstract, and the
jaxpr is then evaluated in three stages:

1. **Eagerly, op by op**, everything that produces variables without needing a random draw's
   values: the frameworks' key derivations (``fold_in``, ``split``: one compiled program reused
   for every parameter), zeros and ones. Equations that need ``x`` (the forward pass) and those
   whose results no variable uses are skipped.
2. **The draws** (``jax.random.normal``) in bulk. With ``jax_threefry_partitionable`` (JAX's
   default), element ``i`` of ``normal(key, shape)`` (flat, row-major index ``i``) is a function
   of the key and ``i`` only: the Threefry-2x32 hash of the counter ``i`` under the key, mapped
   to a float in ``[-1, 1)`` through its mantissa bits and then through ``sqrt(2) erfinv``.
   So every draw is cut into chunks of ``C`` consecutive flat indices, each chunk being a
   ``(key, offset)`` pair, and one program computes ``B`` chunks at a time; its compilation
   (about a quarter of a second on CPU) is shared by every parameter of every shape, where
   evaluating the draws op by op compiles the generator once per distinct parameter shape
   (WRN-28-10: 11 shapes, about 0.75 s each on CPU).
3. **One jitted program** for what follows the draws (a draw times its standard deviation, a
   cast), each operation as the framework writes it.

The values are bit for bit those of the frameworks' own initialisation (tested per framework
and family): the draw program computes the same elementwise operations, in the same order, as
``jax.random.normal`` does, and what follows a draw is a separate program, so that no scale is
fused into the generator. Anything this does not recognise (another PRNG implementation, a
non-float draw, variables that depend on ``x``) falls back to Flax's ``lazy_init`` (stage 1 for
everything, the same values).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ntk_zoo._compat import Literal, bind_eqn, threefry2x32

CHUNK = 2**16  # flat elements per chunk of a draw


class Unsupported(Exception):
    """The initialiser does something the batched path does not handle: use lazy_init."""


# --- the draw program --------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("size", "dtype"))
def _normal_chunk(k1, k2, offset, *, size, dtype):
    """``normal(key, ·)`` at the flat indices ``offset + [0, size)`` (``key`` = ``(k1, k2)``).

    The same operations as ``jax.random.normal`` under ``jax_threefry_partitionable``: Threefry
    on the 64-bit counter split in two 32-bit words (high word 0 here: draws are below 2**32
    elements), the high bits of the hash as a mantissa with exponent 0, shifted into
    ``[nextafter(-1, 0), 1)``, then ``sqrt(2) erfinv``. The key is a scalar pair, as in
    ``jax.random.normal`` (a key per element would make Threefry's loop carry three more
    arrays).
    """
    dtype = np.dtype(dtype)
    counts_lo = offset + lax.iota(np.uint32, size)
    counts_hi = jnp.zeros((size,), np.uint32)
    bits1, bits2 = threefry2x32(k1, k2, counts_hi, counts_lo)
    finfo = jnp.finfo(dtype)
    nbits, nmant = finfo.bits, finfo.nmant
    uint = {32: np.uint32, 64: np.uint64}[nbits]
    if nbits == 64:
        bits = lax.shift_left(
            lax.convert_element_type(bits1, uint), jnp.asarray(32, uint)
        ) | lax.convert_element_type(bits2, uint)
    else:
        bits = bits1 ^ bits2
    lo = np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype), dtype=dtype)
    minval = lax.broadcast_to_rank(lax.convert_element_type(lo, dtype), 1)
    maxval = lax.broadcast_to_rank(lax.convert_element_type(np.array(1.0, dtype), dtype), 1)
    float_bits = lax.shift_right_logical(bits, jnp.array(nbits - nmant, uint))
    float_bits = lax.bitwise_or(
        float_bits, jnp.asarray(np.array(1.0, dtype).view(uint), dtype=uint)
    )
    floats = lax.bitcast_convert_type(float_bits, dtype) - jnp.array(1.0, dtype)
    u = lax.max(minval, floats * (maxval - minval) + minval)
    return lax.mul(np.array(np.sqrt(2), dtype), lax.erf_inv(u))


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def normal_draws(draws: list[tuple[np.ndarray, tuple[int, ...], np.dtype]]) -> list[jax.Array]:
    """``[jax.random.normal(key, shape, dtype) for key, shape, dtype in draws]``, batched.

    Each key is given by its raw Threefry data (two uint32). Every draw is cut into chunks of
    one size (``CHUNK``, or the largest draw rounded up to a power of two if smaller), all
    computed by one compiled program per dtype; the last chunk of a draw is cut short.
    """
    out: list[Any] = [None] * len(draws)
    for dtype in {d[2] for d in draws}:
        members = [i for i, d in enumerate(draws) if d[2] == dtype]
        size = min(CHUNK, _next_pow2(max(math.prod(draws[i][1]) for i in members)))
        rows = {}
        for i in members:  # dispatched asynchronously: computing while Python goes on
            key, shape, _ = draws[i]
            n = math.prod(shape)
            if n >= 2**32:
                raise Unsupported(f"a draw of {n} elements")
            k1, k2 = np.uint32(key[0]), np.uint32(key[1])
            rows[i] = [
                _normal_chunk(k1, k2, np.uint32(j), size=size, dtype=dtype.name)
                for j in range(0, n, size)
            ]
        for i in members:
            shape = draws[i][1]
            flat = np.concatenate([np.asarray(r) for r in rows.pop(i)])
            out[i] = jnp.asarray(flat[: math.prod(shape)].reshape(shape))
    return out


# --- the staged evaluation of the initialiser's jaxpr ------------------------------------------


class _Unknown:
    """A value that needs the (abstract) example input."""


UNKNOWN = _Unknown()


class _Draw:
    """A pending ``jax.random.normal(key, shape, dtype)``."""

    def __init__(self, key, shape, dtype):
        self.key, self.shape, self.dtype = key, shape, dtype


class _Op:
    """A pending equation with at least one pending input; ``index``: which of its results."""

    def __init__(self, eqn, inputs, index):
        self.eqn, self.inputs, self.index = eqn, inputs, index


_Pending = (_Draw, _Op)


def _is_draw(eqn) -> bool:
    return eqn.params.get("name") == "_normal" and "jaxpr" in eqn.params


def _sub_jaxpr(eqn):
    """The closed jaxpr of a ``jit`` equation (None for any other primitive)."""
    jaxpr = eqn.params.get("jaxpr")
    return jaxpr if eqn.primitive.name in ("pjit", "jit") and hasattr(jaxpr, "jaxpr") else None


@functools.cache
def _has_draw(jaxpr) -> bool:
    for eqn in jaxpr.eqns:
        sub = _sub_jaxpr(eqn)
        if _is_draw(eqn) or (sub is not None and _has_draw(sub.jaxpr)):
            return True
    return False


def _live(jaxpr, needed_out: list[bool]) -> tuple[list, set]:
    """The equations that some needed output depends on (dead-code elimination)."""
    outs = zip(jaxpr.outvars, needed_out, strict=True)
    needed = {v for v, keep in outs if keep and not isinstance(v, Literal)}
    live = []
    for eqn in reversed(jaxpr.eqns):
        if any(v in needed for v in eqn.outvars):
            live.append(eqn)
            needed |= {v for v in eqn.invars if not isinstance(v, Literal)}
    return live[::-1], needed


def _draw_key(key) -> np.ndarray:
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or key.shape:
        raise Unsupported("a draw whose key is not one typed key")
    if jax.random.key_impl(key) != jax.random.key_impl(jax.random.key(0, impl="threefry2x32")):
        raise Unsupported("a PRNG other than Threefry")
    return np.asarray(jax.random.key_data(key), np.uint32)


def _walk(jaxpr, consts, args, needed_out):
    """Stages 1 and 2's bookkeeping: eager values, UNKNOWN, or pending nodes per output."""
    env: dict[Any, Any] = {}
    read = lambda v: v.val if isinstance(v, Literal) else env[v]
    env.update(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    live, _ = _live(jaxpr, needed_out)
    for eqn in live:
        ins = [read(v) for v in eqn.invars]
        sub = _sub_jaxpr(eqn)
        if any(x is UNKNOWN for x in ins):
            outs = [UNKNOWN] * len(eqn.outvars)
        elif _is_draw(eqn):
            (aval,) = (v.aval for v in eqn.outvars)
            if not jnp.issubdtype(aval.dtype, jnp.floating) or aval.dtype.itemsize not in (4, 8):
                raise Unsupported(f"a normal draw of dtype {aval.dtype}")
            if any(isinstance(x, _Pending) for x in ins) or len(ins) != 1:
                raise Unsupported("a draw whose key is pending")
            outs = [_Draw(_draw_key(ins[0]), tuple(aval.shape), np.dtype(aval.dtype))]
        elif sub is not None and _has_draw(sub.jaxpr):
            outs = _walk(sub.jaxpr, sub.consts, ins, [True] * len(eqn.outvars))
        elif any(isinstance(x, _Pending) for x in ins):
            outs = [_Op(eqn, ins, i) for i in range(len(eqn.outvars))]
        else:
            outs = bind_eqn(eqn, *ins)
        env.update(zip(eqn.outvars, outs, strict=True))
    return [read(v) if keep else None for v, keep in zip(jaxpr.outvars, needed_out, strict=True)]


def _finish(values: list) -> list:
    """Stages 2 and 3: the draws in bulk, then what follows them as one jitted program."""
    draws, leaves, seen = [], [], set()

    def collect(node):
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, _Draw):
            draws.append(node)
        elif isinstance(node, _Op):
            for x in node.inputs:
                if isinstance(x, _Pending):
                    collect(x)
                elif id(x) not in seen:
                    seen.add(id(x))
                    leaves.append(x)

    for v in values:
        if isinstance(v, _Pending):
            collect(v)
    drawn = normal_draws([(d.key, d.shape, d.dtype) for d in draws])
    if not any(isinstance(v, _Op) for v in values):
        by_id = {id(d): x for d, x in zip(draws, drawn, strict=True)}
        return [by_id[id(v)] if isinstance(v, _Draw) else v for v in values]

    def run(drawn, leaf_values):
        cache = {id(d): x for d, x in zip(draws, drawn, strict=True)}
        cache.update({id(x): y for x, y in zip(leaves, leaf_values, strict=True)})
        results: dict[int, list] = {}

        def value(node):
            if isinstance(node, _Draw) or not isinstance(node, _Op):
                return cache[id(node)] if id(node) in cache else node
            key = id(node.eqn)
            if key not in results:
                ins = [value(x) if isinstance(x, _Pending) else cache[id(x)] for x in node.inputs]
                eqn = node.eqn
                results[key] = bind_eqn(eqn, *ins)
            return results[key][node.index]

        return [value(v) if isinstance(v, _Pending) else None for v in values]

    # Literals' values are Python or NumPy scalars: static, closed over; arrays are arguments.
    static = [x for x in leaves if not isinstance(x, jax.Array)]
    arrays = [x for x in leaves if isinstance(x, jax.Array)]
    leaves = static + arrays

    def program(drawn, array_values):
        return run(drawn, static + list(array_values))

    pending = jax.jit(program)(drawn, arrays)
    return [p if isinstance(v, _Pending) else v for v, p in zip(values, pending, strict=True)]


def batched_init(initialise: Callable, key: jax.Array, example: jax.ShapeDtypeStruct) -> Any:
    """``initialise(key, x)``'s variables, with ``x`` abstract and the normal draws batched.

    Raises :class:`Unsupported` where the staged evaluation does not apply (the caller falls
    back to ``lazy_init``).
    """
    if not jax.config.jax_threefry_partitionable:
        raise Unsupported("jax_threefry_partitionable is off")
    closed, shapes = jax.make_jaxpr(initialise, return_shape=True)(key, example)
    n_out = len(closed.jaxpr.outvars)
    values = _walk(closed.jaxpr, closed.consts, [key, UNKNOWN], [True] * n_out)
    if any(v is UNKNOWN for v in values):
        raise Unsupported("variables that depend on the example input")
    values = _finish(values)
    return jax.tree.unflatten(jax.tree.structure(shapes), values)
