"""A dataset from a config: the shipped digits, or the user's own ``.npz`` file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ntk_zoo.data._digits import load_digits


def load_dataset(config: Mapping[str, Any], *, dtype: str = "float32") -> tuple[np.ndarray, Any]:
    """``(x, y)`` for ``config`` (``name``, ``path``, ``n``, ``image``).

    With ``path`` set, reads an ``.npz`` holding ``x`` (float or integer array, batch first)
    and optionally ``y``; otherwise the digits (``image=True``: ``(n, 8, 8, 1)``, else
    ``(n, 64)``). ``n`` keeps the first ``n`` examples.
    """
    n = int(config.get("n", 0)) or None
    path = config.get("path", "")
    if not path:
        if config.get("name", "digits") != "digits":
            raise ValueError(f"Unknown dataset {config['name']!r}: use 'digits' or data.path.")
        return load_digits(n, image=bool(config.get("image", False)), dtype=dtype)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data.path {path!r} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f:
                raise ValueError(f"{path} has no array 'x' (found {sorted(f.files)}).")
            x, y = f["x"], f["y"] if "y" in f else None
    except (OSError, ValueError) as e:
        raise ValueError(f"data.path {path!r} is not a usable .npz file: {e}") from e
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{path}: x has dtype {x.dtype}; it must be a float or integer array.")
    if x.ndim < 2:
        raise ValueError(f"{path}: x has shape {x.shape}; it must be (n, ...) with n examples.")
    if y is not None and len(y) != len(x):
        raise ValueError(f"{path}: y has {len(y)} entries but x has {len(x)} examples.")
    if n is not None:
        x, y = x[:n], None if y is None else y[:n]
    return x.astype(dtype), y
