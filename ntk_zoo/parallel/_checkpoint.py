"""Finished blocks on disk, tied to the exact inputs, params and settings that made them."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax
import numpy as np


def fingerprint(arrays: Any, settings: dict[str, Any]) -> str:
    """SHA-256 of every array's bytes, shapes and dtypes, and of the settings."""
    digest = hashlib.sha256()
    leaves, treedef = jax.tree.flatten(arrays, is_leaf=lambda a: a is None)
    digest.update(str(treedef).encode())
    for leaf in leaves:
        if leaf is None or not hasattr(leaf, "dtype"):
            digest.update(repr(leaf).encode())
            continue
        a = np.asarray(leaf)
        digest.update(f"{a.shape}{a.dtype}".encode())
        digest.update(np.ascontiguousarray(a).tobytes())
    digest.update(json.dumps(settings, sort_keys=True, default=repr).encode())
    return digest.hexdigest()


class BlockStore:
    """``checkpoint_dir/manifest.json`` plus one ``.npz`` per finished block."""

    def __init__(self, directory: str, key: str):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        manifest = os.path.join(directory, "manifest.json")
        if os.path.exists(manifest):
            with open(manifest) as f:
                found = json.load(f).get("fingerprint")
            if found != key:
                raise ValueError(
                    f"checkpoint_dir {directory!r} holds blocks of a different computation "
                    "(other inputs, params or settings); refusing to mix them. Use a new "
                    "checkpoint_dir, or delete this one to start over."
                )
        else:
            with open(manifest, "w") as f:
                json.dump({"fingerprint": key}, f)

    def _path(self, task: tuple[int, int]) -> str:
        return os.path.join(self.directory, f"block_{task[0]}_{task[1]}.npz")

    def load(self, task: tuple[int, int]) -> list[np.ndarray] | None:
        path = self._path(task)
        if not os.path.exists(path):
            return None
        with np.load(path) as f:
            return [f[f"leaf_{i}"] for i in range(len(f.files))]

    def save(self, task: tuple[int, int], leaves: list[np.ndarray]) -> None:
        path = self._path(task)
        tmp = path + ".tmp.npz"  # written whole, then renamed: an interruption leaves no half
        np.savez(tmp, **{f"leaf_{i}": a for i, a in enumerate(leaves)})
        os.replace(tmp, path)
