"""Finished blocks on disk, tied to the exact inputs, params and settings that made them.

The fingerprint covers what the kernel is (inputs, params, keyword arguments, method, axes,
block size, dtype), never how it was computed (processes, devices, mesh): blocks saved by a run
over four processes are reused by a run over one. Every file is written under a unique temporary
name and renamed into place (``os.replace`` is atomic), so a process killed mid-write, or two
processes writing the same block, never leave a torn file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
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


def _atomic_write(path: str, write: Any, suffix: str) -> None:
    """Writes through ``write(file)`` to a unique temporary file, then renames it to ``path``."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class BlockStore:
    """``checkpoint_dir/manifest.json`` plus one ``block_<i>_<j>.npz`` per finished block.

    With ``out=`` files the blocks are stored once, in those files: the checkpoint then holds
    only the manifest and an empty ``done_<i>_<j>`` marker per block already written (and
    synced) there, see :meth:`mark`.
    """

    def __init__(self, directory: str, key: str):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        manifest = os.path.join(directory, "manifest.json")
        if not os.path.exists(manifest):  # concurrent creators write the same bytes
            body = json.dumps({"fingerprint": key}).encode()
            _atomic_write(manifest, lambda f: f.write(body), ".json")
        with open(manifest) as f:
            found = json.load(f).get("fingerprint")
        if found != key:
            raise ValueError(
                f"checkpoint_dir {directory!r} holds blocks of a different computation "
                "(other inputs, params or settings); refusing to mix them. Use a new "
                "checkpoint_dir, or delete this one to start over."
            )

    def _path(self, task: tuple[int, int]) -> str:
        return os.path.join(self.directory, f"block_{task[0]}_{task[1]}.npz")

    def saved(self) -> set[tuple[int, int]]:
        """The blocks on disk."""
        found = set()
        for name in os.listdir(self.directory):
            if name.startswith("block_") and name.endswith(".npz"):
                i, j = name[len("block_") : -len(".npz")].split("_")
                found.add((int(i), int(j)))
        return found

    def load(self, task: tuple[int, int]) -> list[np.ndarray] | None:
        path = self._path(task)
        if not os.path.exists(path):
            return None
        try:
            with np.load(path) as f:
                return [f[f"leaf_{i}"] for i in range(len(f.files))]
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            return None  # unreadable (damaged outside our control): computed again

    def save(self, task: tuple[int, int], leaves: list[np.ndarray]) -> None:
        arrays = {f"leaf_{i}": a for i, a in enumerate(leaves)}
        _atomic_write(self._path(task), lambda f: np.savez(f, **arrays), ".npz")

    # -- blocks kept in the kernel's own file (out=): markers only -----------------------------
    def _marker(self, task: tuple[int, int]) -> str:
        return os.path.join(self.directory, f"done_{task[0]}_{task[1]}")

    def done(self) -> set[tuple[int, int]]:
        """The blocks marked as written into the kernel's file."""
        found = set()
        for name in os.listdir(self.directory):
            if name.startswith("done_"):
                i, j = name[len("done_") :].split("_")
                found.add((int(i), int(j)))
        return found

    def mark(self, tasks: list[tuple[int, int]]) -> None:
        """Records blocks whose bytes are in the file (call after syncing it): empty files."""
        for task in tasks:
            with open(self._marker(task), "wb"):
                pass

    def forget(self) -> None:
        """Drops every marker (the file they described is gone or was remade)."""
        for task in self.done():
            os.remove(self._marker(task))
