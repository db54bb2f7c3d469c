"""Features of a whole dataset, block by block, into memory or a resumable ``.npy`` memmap."""

from __future__ import annotations

import glob
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
    ``<out>.blocks.json`` (process ``i > 0`` of several: ``<out>.blocks.<i>.json``); a rerun
    with the same inputs and settings, by any number of processes, computes only the blocks
    recorded in none of them. Several processes (``jax.distributed``) share the blocks left,
    every ``processes``-th each, in one file they all see; each returns the whole file.
    """
    n = jax.tree.leaves(x)[0].shape[0]
    size = min(batch_size or n, n)
    if size < 1:
        raise ValueError(f"batch_size={batch_size!r}: give a positive number of examples.")
    starts = list(range(0, n, size))
    block = lambda s: program(params, pad_rows(x, s, min(s + size, n), size), kwargs, key)
    from tqdm.auto import tqdm

    me, processes = jax.process_index(), jax.process_count()
    bar = lambda blocks: tqdm(
        blocks, desc="gradient features", unit="block", disable=not progress or me > 0
    )
    if out is None:
        parts = [
            jax.tree.map(lambda a, s=s: np.asarray(a[: min(size, n - s)]), block(s))
            for s in bar(starts)
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
    key_data = jax.random.key_data(key)
    print_key = _fingerprint((params, x, kwargs, key_data), {**settings, "block": size})
    records = sorted(glob.glob(glob.escape(out) + ".blocks*.json"))
    own = _record(out, me)
    done: set[int] = set()
    mine_before: set[int] = set()
    resume = bool(records) and os.path.exists(out)
    if resume:
        for path in records:
            with open(path) as f:
                saved = json.load(f)
            if saved.get("fingerprint") != print_key:
                raise ValueError(
                    f"{out} holds features of other inputs or settings (its {path} does not "
                    "match): remove the file and its records, or choose another out=."
                )
            done |= set(saved["done"])
            if path == own:
                mine_before = set(saved["done"])
    _barrier("ntk_zoo.gradient_features: records read")  # before anyone writes one
    if me == 0 and not resume:
        for path in records:  # stale records of a file that is gone or remade
            os.remove(path)
        np.lib.format.open_memmap(out, "w+", dtype, shape).flush()  # the file, zeroed
        _write_json(own, {"fingerprint": print_key, "done": []})
    _barrier("ntk_zoo.gradient_features: file created")
    target = np.load(out, mmap_mode="r+")
    todo = [b for b in range(len(starts)) if b not in done]
    mine = set(mine_before)
    for b in bar(todo[me::processes]):  # this process's share: every processes-th block left
        s = starts[b]
        stop = min(s + size, n)
        target[s:stop] = np.asarray(block(s))[: stop - s]
        target.flush()
        mine.add(b)
        _write_json(own, {"fingerprint": print_key, "done": sorted(mine)})
    del target
    _barrier("ntk_zoo.gradient_features: blocks written")  # the whole file, for everyone
    return np.load(out, mmap_mode="r")


def _record(out: str, process: int) -> str:
    """The record of the blocks ``process`` wrote into ``out`` (one file per process, so that
    no two processes write one file; a rerun reads them all)."""
    return f"{out}.blocks.json" if process == 0 else f"{out}.blocks.{process}.json"


def _barrier(name: str) -> None:
    """Waits for every process (after ``jax.distributed.initialize``); nothing for one."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
