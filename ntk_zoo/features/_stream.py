"""Features of a whole dataset, block by block, into memory or a resumable ``.npy`` memmap."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from ntk_zoo.core import pad_rows

PyTree = Any


def _fingerprint(arrays: PyTree, settings: dict) -> str:
    """SHA-256 of the arrays' bytes, shapes and dtypes, and of the settings."""
    digest = hashlib.sha256()
    leaves, treedef = jax.tree.flatten(arrays)
    digest.update(str(treedef).encode())
    for leaf in leaves:
        a = np.asarray(leaf)
        digest.update(f"{a.shape}{a.dtype}".encode())
        digest.update(np.ascontiguousarray(a).tobytes())
    named = lambda v: getattr(v, "__qualname__", None) if callable(v) else v
    settings = jax.tree.map(named, settings)
    digest.update(json.dumps(settings, sort_keys=True, default=repr).encode())
    return digest.hexdigest()


def _write_json(path: str, value: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(value, f)
    os.replace(tmp, path)


def stream(
    program: Callable,
    params: PyTree,
    x: PyTree,
    kwargs: dict,
    key: jax.Array,
    batch_size: int | None,
    out: str | None,
    settings: dict,
    progress: bool,
) -> PyTree:
    """``program`` over blocks of ``batch_size`` examples (axis 0 of ``x``), the last padded.

    With ``out``, each finished block is written into the ``.npy`` file and recorded in
    ``<out>.blocks.json``; a rerun with the same inputs and settings computes only the blocks
    not recorded there.
    """
    n = jax.tree.leaves(x)[0].shape[0]
    size = min(batch_size or n, n)
    if size < 1:
        raise ValueError(f"batch_size={batch_size!r}: give a positive number of examples.")
    starts = list(range(0, n, size))
    block = lambda s: program(params, pad_rows(x, s, min(s + size, n), size), kwargs, key)
    if out is None:
        parts = [
            jax.tree.map(lambda a, s=s: np.asarray(a[: min(size, n - s)]), block(s)) for s in starts
        ]
        return jax.tree.map(lambda *a: np.concatenate(a), *parts)

    shapes = jax.eval_shape(lambda: block(0))
    if not isinstance(shapes, jax.ShapeDtypeStruct):
        raise ValueError(
            "out= writes one array of features: give cotangents= (one feature vector per "
            "example) or a model with one output array."
        )
    if not out.endswith(".npy"):
        raise ValueError(f"out={out!r} must be a .npy path.")
    shape, dtype = (n, *shapes.shape[1:]), np.dtype(shapes.dtype)
    record = out + ".blocks.json"
    key_data = jax.random.key_data(key)
    print_key = _fingerprint((params, x, kwargs, key_data), {**settings, "block": size})
    done: set[int] = set()
    if os.path.exists(record) and os.path.exists(out):
        with open(record) as f:
            saved = json.load(f)
        if saved.get("fingerprint") != print_key:
            raise ValueError(
                f"{out} holds features of other inputs or settings (its {record} does not "
                "match): remove both files, or choose another out=."
            )
        target = np.load(out, mmap_mode="r+")
        done = set(saved["done"])
    else:
        target = np.lib.format.open_memmap(out, "w+", dtype, shape)
        _write_json(record, {"fingerprint": print_key, "done": []})
    for b, s in enumerate(starts):
        if b in done:
            continue
        stop = min(s + size, n)
        target[s:stop] = np.asarray(block(s))[: stop - s]
        target.flush()
        done.add(b)
        _write_json(record, {"fingerprint": print_key, "done": sorted(done)})
        if progress:
            print(f"gradient_features: block {b + 1}/{len(starts)} written to {out}")
    del target
    return np.load(out, mmap_mode="r")
