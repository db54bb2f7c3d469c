"""The machine's speed per kind of step: the table that turns ``auto``'s counts into seconds.

A :class:`CostTable` holds, for one backend (``"cpu"``, ``"gpu"``, ``"tpu"``), the rates that
``roofline_cost`` uses:

* ``matmul_flops``: FLOP/s of large matrix products and convolutions;
* ``einsum_flops``: FLOP/s of batched contractions whose output tile per batch element is small
  (``M·N < SMALL_TILE``), the many small einsums of structured derivatives and of a Jacobian
  contraction over few examples;
* ``memory_bytes``: bytes/s of memory-bound steps (elementwise passes, transposes, copies);
* ``overhead_s``: the fixed time of one step of a compiled program (launch / loop overhead);
* ``conv_grad_flops``: FLOP/s of per-example convolution weight gradients (the Jacobians of a
  convolution's kernel, one per example and output: XLA runs them as grouped convolutions,
  measured at a tenth of the matmul rate on XLA:CPU). Rows written before it existed read as
  ``None``: :data:`CONV_GRAD_SHARE` of ``matmul_flops``.

A step of kind ``"matmul"``, ``"einsum"`` or ``"memory"`` takes
``steps · overhead + max(flops / rate, bytes / memory_bytes)`` (a roofline: compute and memory
traffic overlap); a ``"pass"`` (a whole forward / backward pass over a network, many steps of
both sorts one after another) takes ``flops / matmul_flops + bytes / memory_bytes``.

The active table of a backend is, in order: the file that :func:`ntk_zoo.calibrate` wrote to the
user cache directory (``$NTK_ZOO_CACHE_DIR``, else ``$XDG_CACHE_HOME/ntk_zoo``, else
``~/.cache/ntk_zoo``; one ``cost_table-<backend>.json`` per backend), else the row of that
backend shipped with the package (``calibration.json``, measured by
``python -m benchmarks calibrate``), else :data:`DEFAULT_TABLE`. A cache file that cannot be read
or has the wrong schema warns once and is skipped. Files are read lazily, once per process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import warnings
from typing import Any, ClassVar

SCHEMA = 1
# A contraction whose output tile per batch element (free size of one side × of the other) is
# below SMALL_TILE values and whose work per batch element (m·k·n) is below SMALL_WORK is an
# "einsum" step (small batched), not a "matmul": too little work per tile to reach the peak.
SMALL_TILE = 1024
SMALL_WORK = 1 << 18
# A larger product whose output tile is still below NARROW_TILE values (a Gram of a few hundred
# kernel rows, n·o, over all of one leaf's params: Jacobian contraction's products and structured
# derivatives' dense-factor Grams) is a "narrow" step, run at NARROW_SHARE of the matmul rate.
# Measured on the 2-core XLA:CPU (one process, CPU time against the calibration's 1024³ matmul,
# issue 21): Grams 128×16384 0.37, 160×16384 0.44, 160×32768 0.40, 256×16384 0.60, 160×4608
# 0.49 of it; 1600×4608 1.00.
NARROW_TILE = 1 << 17
NARROW_SHARE = 0.44
# Extracting a convolution's patches (structured derivatives' convolution rule: the input
# padded once, one strided slice per filter offset, stacked) writes its values at PATCHES_SHARE
# of the memory rate. Quiet 2-core XLA:CPU, CPU time, 3x3 windows, float32 (issue 22): 0.76 GB/s
# for N=16 32x32x64 (36 MiB of patches), 1.6-3.9 GB/s for 9-18 MiB; over those five shapes,
# byte-weighted, 1.24 GB/s, 0.24 of the table's 5.2 GB/s. (Before, the rule called
# ``lax.conv_general_dilated_patches``, a one-hot grouped convolution: 0.31-0.53 GB/s on the
# same shapes.)
PATCHES_SHARE = 0.2
KINDS = ("matmul", "einsum", "memory", "pass", "conv_grad", "narrow", "patches")
# The per-example convolution weight gradients' rate as a share of the matmul rate where the
# table does not say (a row from before it was measured): 2-core XLA:CPU, 16x16 to 32x32
# images, 3-64 channels, 8-16 outputs: 6-23 GFLOP/s against 70-180 (BENCHMARKS.md, "auto").
CONV_GRAD_SHARE = 0.2
# What those gradients move (the input and cotangents read, one kernel per example written),
# as a share of the memory rate: grouped convolutions with few channels are memory-bound far
# below the memory rate. Measured (2-core XLA:CPU, CPU time against ``x*2+1`` on 64 MiB in one
# process, 7 alternating rounds, load 4): 0.12-0.35 of it, median 0.21, on nine shapes of
# 8x8 to 32x32 images with 3-32 input channels, N=8-32, O=8-100 (rates 5-32 GFLOP/s per CPU
# second); 32x32x64->64 is compute-bound (53 GFLOP/s, 0.12 of the memory rate).
CONV_GRAD_BYTES_SHARE = 0.2
_RATES = ("matmul_flops", "einsum_flops", "memory_bytes", "overhead_s")
_SHIPPED = pathlib.Path(__file__).with_name("calibration.json")
CACHE_ENV = "NTK_ZOO_CACHE_DIR"


@dataclasses.dataclass(frozen=True)
class CostTable:
    """The speed of one backend per kind of step (see the module docstring).

    Attributes:
      backend: ``jax.default_backend()`` of the machine it describes (``"cpu"``, ``"gpu"``...).
      matmul_flops: FLOP/s of large matrix products and convolutions.
      einsum_flops: FLOP/s of small batched contractions (output tile ``M·N < SMALL_TILE``).
      memory_bytes: bytes/s of memory-bound steps.
      overhead_s: seconds of fixed cost per step.
      source: where the table came from: ``"cache: <path>"``, ``"shipped"``, ``"default"``,
        ``"measured"`` (by :func:`ntk_zoo.calibrate`) or ``"custom"``.
      machine: what it was measured on (CPU model, cores, device, jax/jaxlib versions, date).
      conv_grad_flops: FLOP/s of per-example convolution weight gradients; ``None``:
        :data:`CONV_GRAD_SHARE` × ``matmul_flops`` (a row written before it was measured).

    Example:
      >>> from ntk_zoo.core import CostTable
      >>> t = CostTable("cpu", 1e11, 2e10, 1e10, 2e-6)
      >>> [round(t.seconds(1e9, 4e6, kind), 6) for kind in ("matmul", "einsum", "memory")]
      [0.010002, 0.050002, 0.010002]
      >>> round(t.seconds(1e9, 4e8, "memory"), 6)  # 400 MB at 10 GB/s: memory-bound
      0.040002
      >>> CostTable.from_json(t.to_json()) == t
      True
    """

    SCHEMA: ClassVar[int] = SCHEMA  # the version of the stored rows' layout

    backend: str
    matmul_flops: float
    einsum_flops: float
    memory_bytes: float
    overhead_s: float
    source: str = dataclasses.field(default="custom", compare=False)
    machine: Any = dataclasses.field(default=None, compare=False, hash=False)
    conv_grad_flops: float | None = None  # last: positional rows of four rates still work

    def __post_init__(self) -> None:
        names = _RATES if self.conv_grad_flops is None else (*_RATES, "conv_grad_flops")
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value != value:
                raise ValueError(f"CostTable.{name} must be a number, got {value!r}.")
            if value < 0 or (value == 0 and name != "overhead_s"):
                raise ValueError(f"CostTable.{name} must be positive, got {value!r}.")

    def seconds(self, flops: float, nbytes: float, kind: str = "matmul", steps: float = 1) -> float:
        """``steps · overhead + max(flops / rate[kind], nbytes / memory_bytes)`` seconds (the sum
        of the two terms for ``kind="pass"``).

        ``"memory"`` and ``"pass"`` run their FLOPs at the matmul rate, ``"conv_grad"`` at
        :attr:`conv_grad_rate` (its bytes at :data:`CONV_GRAD_BYTES_SHARE` of the memory
        rate), ``"narrow"`` (a product with a small output tile, see
        :func:`contraction_kind`) at :data:`NARROW_SHARE` of the matmul rate; ``"patches"``
        (a convolution's patches extracted) moves its bytes at :data:`PATCHES_SHARE` of the
        memory rate.
        """
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r} is not a kind of step; choose one of {KINDS}.")
        rate = self.einsum_flops if kind == "einsum" else self.matmul_flops
        if kind == "conv_grad":
            rate = self.conv_grad_rate
        if kind == "narrow":
            rate = NARROW_SHARE * self.matmul_flops
        if kind == "pass":
            return steps * self.overhead_s + flops / rate + nbytes / self.memory_bytes
        share = {"patches": PATCHES_SHARE, "conv_grad": CONV_GRAD_BYTES_SHARE}.get(kind, 1.0)
        bandwidth = self.memory_bytes * share
        return steps * self.overhead_s + max(flops / rate, nbytes / bandwidth)

    @property
    def conv_grad_rate(self) -> float:
        """FLOP/s of per-example convolution weight gradients: ``conv_grad_flops`` where
        measured, else :data:`CONV_GRAD_SHARE` × ``matmul_flops``."""
        if self.conv_grad_flops is None:
            return CONV_GRAD_SHARE * self.matmul_flops
        return self.conv_grad_flops

    def to_json(self) -> dict:
        """The row as stored in a calibration file (``schema`` included)."""
        row = {"schema": SCHEMA, "backend": self.backend}
        row.update({name: float(getattr(self, name)) for name in _RATES})
        if self.conv_grad_flops is not None:
            row["conv_grad_flops"] = float(self.conv_grad_flops)
        row["machine"] = self.machine or {}
        return row

    @classmethod
    def from_json(cls, row: Any, source: str = "custom") -> CostTable:
        """A table from a stored row; ``ValueError`` naming the problem if it is not one."""
        if not isinstance(row, dict):
            raise ValueError(f"a cost table row must be a JSON object, got {type(row).__name__}")
        if row.get("schema") != SCHEMA:
            raise ValueError(f"schema {row.get('schema')!r}, expected {SCHEMA}")
        missing = [k for k in ("backend", *_RATES) if k not in row]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        if not isinstance(row["backend"], str):
            raise ValueError(f"backend must be a string, got {row['backend']!r}")
        machine = row.get("machine", {})
        if not isinstance(machine, dict):
            raise ValueError("machine must be a JSON object")
        rates = {k: row[k] for k in _RATES}
        conv_grad = row.get("conv_grad_flops")  # absent from rows written before it existed
        return cls(
            row["backend"], **rates, source=source, machine=machine, conv_grad_flops=conv_grad
        )


# Used when neither a cached nor a shipped row exists for the backend: a 2-core x86 CPU's
# orders of magnitude (100 GFLOP/s matmuls, 25 GFLOP/s small einsums, 10 GB/s, 3 µs a step).
DEFAULT_TABLE = CostTable("default", 1e11, 2.5e10, 1e10, 3e-6, source="default")

_active: dict[str, CostTable] = {}
_warned: set[str] = set()


def cache_dir() -> pathlib.Path:
    """Where :func:`ntk_zoo.calibrate` caches tables: ``$NTK_ZOO_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/ntk_zoo``, else ``~/.cache/ntk_zoo``."""
    if os.environ.get(CACHE_ENV):
        return pathlib.Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "ntk_zoo"


def cache_path(backend: str) -> pathlib.Path:
    """The cache file of ``backend``'s table."""
    return cache_dir() / f"cost_table-{backend}.json"


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def _read_cache(backend: str) -> CostTable | None:
    path = cache_path(backend)
    if not path.exists():
        return None
    try:
        table = CostTable.from_json(json.loads(path.read_text()), source=f"cache: {path}")
        if table.backend != backend:
            raise ValueError(f"it describes backend {table.backend!r}")
        return table
    except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        _warn_once(
            str(path),
            f"Ignoring the cost table cached at {path} ({e}); auto falls back to the shipped "
            "table. Run ntk_zoo.calibrate() to measure this machine again, or delete the file.",
        )
        return None


def shipped_path() -> pathlib.Path:
    """The table file shipped with the package (``ntk_zoo/core/calibration.json``)."""
    return _SHIPPED


def shipped_tables() -> dict[str, CostTable]:
    """The rows shipped with the package (``ntk_zoo/core/calibration.json``), by backend."""
    data = json.loads(_SHIPPED.read_text())
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{_SHIPPED}: schema {data.get('schema')!r}, expected {SCHEMA}")
    return {b: CostTable.from_json(row, source="shipped") for b, row in data["backends"].items()}


def active_table(backend: str | None = None) -> CostTable:
    """The table ``auto`` uses on ``backend`` (default: ``jax.default_backend()``): the cached
    one, else the shipped one, else :data:`DEFAULT_TABLE` (see the module docstring)."""
    if backend is None:
        import jax

        backend = jax.default_backend()
    if backend not in _active:
        table = _read_cache(backend)
        if table is None:
            table = shipped_tables().get(backend)
        if table is None:
            table = dataclasses.replace(DEFAULT_TABLE, backend=backend)
        _active[backend] = table
    return _active[backend]


def use_table(table: CostTable) -> None:
    """Make ``table`` the active one of its backend in this process (until :func:`reset_tables`).

    Example:
      >>> from ntk_zoo.core import CostTable, active_table, reset_tables, use_table
      >>> use_table(CostTable("cpu", 1e11, 1e9, 1e10, 0.0))
      >>> active_table("cpu").einsum_flops
      1000000000.0
      >>> reset_tables()
    """
    if not isinstance(table, CostTable):
        raise TypeError(f"use_table needs a CostTable, got {type(table).__name__}.")
    _active[table.backend] = table


def reset_tables() -> None:
    """Forget the tables read so far (the next estimate reads the files again)."""
    _active.clear()
    _warned.clear()


def contraction_kind(m: float, k: float, n: float) -> str:
    """The kind of a contraction of an ``m×k`` by a ``k×n`` block (per batch element):
    ``"memory"`` without a contracted axis, ``"einsum"`` for an output tile below
    :data:`SMALL_TILE` with under :data:`SMALL_WORK` multiply-adds, ``"narrow"`` for an output
    tile below :data:`NARROW_TILE`, else ``"matmul"``.

    Example:
      >>> from ntk_zoo.core import contraction_kind
      >>> mkns = [(16, 64, 16), (16, 10**6, 16), (160, 16384, 160), (1024, 1024, 1024)]
      >>> [contraction_kind(*mkn) for mkn in mkns]
      ['einsum', 'narrow', 'narrow', 'matmul']
    """
    if k <= 1:
        return "memory"
    if m * n < SMALL_TILE and m * k * n < SMALL_WORK:
        return "einsum"
    return "narrow" if m * n < NARROW_TILE else "matmul"
