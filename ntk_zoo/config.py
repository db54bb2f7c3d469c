"""Helpers for ``get_config(arg)`` files (ml_collections), in the style of big_vision."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ntk_zoo._extras import require

ml_collections = require("ml_collections", "ntk_zoo.config")

# The defaults of each parse_arg call while recorded_arguments() is active (for `--help`).
_RECORDS: list[list[dict[str, Any]]] = []


@contextlib.contextmanager
def recorded_arguments() -> Iterator[list[dict[str, Any]]]:
    """Collects the defaults of every :func:`parse_arg` call made inside the block.

    ``ntk-zoo <command> --help`` uses it to list a config file's arguments with their defaults.

    Example:
      >>> with recorded_arguments() as calls:
      ...     _ = parse_arg("width=64", width=512, runlocal=False)
      >>> calls
      [{'width': 512, 'runlocal': False}]
    """
    calls: list[dict[str, Any]] = []
    _RECORDS.append(calls)
    try:
        yield calls
    finally:
        _RECORDS[:] = [c for c in _RECORDS if c is not calls]


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
    """Parses ``"key=value,flag,..."`` over typed defaults.

    A bare ``flag`` sets a boolean default to ``True``; values are converted to the type of their
    default. Unknown keys are an error that lists the known ones.

    Example:
      >>> arg = parse_arg("framework=nnx,width=64,runlocal", framework="linen", width=512,
      ...                 runlocal=False)
      >>> arg.framework, arg.width, arg.runlocal
      ('nnx', 64, True)
    """
    for calls in _RECORDS:
        calls.append(dict(defaults))
    out = ml_collections.ConfigDict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        if key not in defaults:
            raise ValueError(f"Unknown config argument {key!r}; known: {sorted(defaults)}.")
        default = defaults[key]
        if not sep:
            if not isinstance(default, bool):
                raise ValueError(f"Config argument {key!r} needs a value: {key}=...")
            out[key] = True
        elif isinstance(default, bool):
            out[key] = value.lower() in ("1", "true", "yes")
        else:
            out[key] = type(default)(value)
    return out


def base_config(
    model: dict[str, Any], *, n: int, image: bool, runlocal: bool
) -> ml_collections.ConfigDict:
    """The four sections every experiment config has: model, data, ntk, output."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = ml_collections.ConfigDict(model)
    config.data = ml_collections.ConfigDict(
        {"name": "digits", "path": "", "n": 16 if runlocal else n, "image": image}
    )
    config.ntk = ml_collections.ConfigDict(
        {
            "method": "auto",
            "trace_axes": (-1,),
            "cotangents": "",  # "pntk": the kernel v_iᵀ Θ v_j with v = 1/√O, one VJP per example
            "vmap": True,
            "batch_size": 0,  # examples per block; 0: the largest that fits memory_budget
            "memory_budget": 0,  # bytes per block; 0: half the free device/host memory
            "checkpoint_dir": "",  # resumable: finished blocks are kept there
            "mesh": False,  # spread blocks over all local devices
            "out": "",  # e.g. kernel.npy: written block by block into workdir/out (memmap)
            "dense_spectrum_limit": 1 << 27,  # float64 bytes; larger kernels: streamed Lanczos
            "distributed": {  # several processes/hosts: jax.distributed.initialize(**these)
                "coordinator_address": "",  # host:port of process 0; "auto": Slurm, k8s, TPU
                "num_processes": 1,
                "process_id": 0,
            },
            "dtype": "float32",
            "per_layer": True,
        }
    )
    config.output = ml_collections.ConfigDict({"plot": True, "save_kernel": True})
    return config
