"""Wisdom: ``auto``'s measured decisions, remembered in the user cache for every later run.

Like FFTW's wisdom, a measured pick (see :class:`AutoOptions`) is stored under a fingerprint of
everything that decides the timing: the traced program of ``f`` at these shapes (its jaxpr text,
memory addresses removed), the shapes and dtypes of params and inputs, ``trace_axes``,
``diagonal_axes``, ``vmap_axes``, ``sum_params``, the measuring options, the backend, the device
kind and the versions of ntk_zoo and jax. A rerun of the same program reads the pick back and
measures nothing.

The file is ``wisdom-<backend>.json`` in the directory of the calibration (that of
:func:`ntk_zoo.core.cache_path`: ``$NTK_ZOO_CACHE_DIR``, else ``$XDG_CACHE_HOME/ntk_zoo``,
else ``~/.cache/ntk_zoo``). A file that cannot be parsed, or an entry of the wrong form, is ignored
with a one-time warning (the next decision overwrites it); a directory that cannot be written
warns once and keeps the decisions in memory for this process. :func:`clear_wisdom` forgets all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import re
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax

from ntk_zoo.core import Problem, cache_path

SCHEMA = 1
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+|0x[0-9a-fA-F]+")


@dataclasses.dataclass(frozen=True)
class AutoOptions:
    """How ``method="auto"`` decides: by the cost model's estimate, or by measuring.

    Measuring (FFTW's ``MEASURE`` plans): the candidates are the methods whose estimated seconds
    are within ``within`` times the lowest estimate (with ``runs > 1``, those after the best
    estimate only where their compile and timing calls cost less than their expected saving
    over the job, the estimate's error taken log-uniform within ``within``), plus, for a
    program that will run ``runs`` times, each other method (cheapest estimate first) while the
    estimated cost of timing them (a compile as long as the candidates' slowest, and
    ``1 + repeats`` calls at their estimates) stays within ``overhead`` × ``runs`` × the
    lowest estimate: an estimate wrong by more than ``within`` is then still found where
    timing it is a small part of the job. Each
    candidate is compiled ahead of time for the real shapes
    (``jax.jit(...).lower(...).compile()``), dropped if XLA's ``memory_analysis()`` of its
    program (arguments + outputs + temporaries) exceeds ``memory_budget``, called once to warm
    up and then ``repeats`` times, and the one with the least time per call is kept; its
    compiled program is the one that runs. The decision is stored as wisdom (see
    :func:`clear_wisdom`) and read back by any later run of the same program.

    Attributes:
      measure: ``True`` measures; ``False`` estimates only; ``None`` (the default) lets the
        caller choose: :func:`ntk_zoo.ntk_fn` estimates, :func:`ntk_zoo.batched` measures (its
        blocks run the same program many times) unless there is a single block.
      within: candidates are the methods estimated within this factor of the best (``>= 1``).
      repeats: timed calls per candidate, after one warm-up call (``>= 1``).
      memory_budget: bytes a candidate's compiled program may use; ``None``: the device's
        memory limit where JAX reports one, else no limit.
      wisdom: read and write the wisdom file (``False``: measure every time, remember nothing).
      clock: seconds as a float (``time.perf_counter``); injectable so tests can script timings.
      runs: how many times the program will run at these shapes (``>= 1``);
        :func:`ntk_zoo.batched` passes its block count. Not part of the wisdom key: a stored
        pick is reused when it timed every method that measuring with these ``runs`` would.
      overhead: the fraction of the job's estimated time (``runs`` × the best estimate) that
        timing the methods beyond ``within`` may take (``0 <= overhead <= 1``); with
        ``runs=1`` no such method is timed.

    Under a user's ``jax.jit`` nothing can be timed: ``auto`` then uses stored wisdom if the same
    program was measured before, else the estimate.

    Example:
      >>> import jax.numpy as jnp, ntk_zoo
      >>> f = lambda p, x: jnp.tanh(x @ p["w"])
      >>> options = ntk_zoo.AutoOptions(measure=True, within=1.0, wisdom=False)  # one candidate
      >>> kernel_fn = ntk_zoo.ntk_fn(f, auto=options)
      >>> params, x = {"w": jnp.ones((3, 4))}, jnp.ones((2, 3))
      >>> kernel_fn(x, None, params).shape
      (2, 2)
      >>> kernel_fn.choose(x, None, params).measured
      True
    """

    measure: bool | None = None
    within: float = 3.0
    repeats: int = 2
    memory_budget: int | None = None
    wisdom: bool = True
    clock: Callable[[], float] = time.perf_counter
    runs: int = 1  # last, after the fields that existed before: positional calls still work
    overhead: float = 0.05

    def __post_init__(self) -> None:
        if self.measure not in (None, True, False):
            raise ValueError(f"AutoOptions.measure={self.measure!r}: use True, False or None.")
        if not self.within >= 1:
            raise ValueError(f"AutoOptions.within={self.within!r} must be >= 1 (a factor).")
        if not (isinstance(self.repeats, int) and self.repeats >= 1):
            raise ValueError(f"AutoOptions.repeats={self.repeats!r} must be an int >= 1.")
        if not (isinstance(self.runs, int) and self.runs >= 1):
            raise ValueError(f"AutoOptions.runs={self.runs!r} must be an int >= 1.")
        if not 0 <= self.overhead <= 1:
            raise ValueError(f"AutoOptions.overhead={self.overhead!r}: a fraction in [0, 1].")
        if self.memory_budget is not None and not self.memory_budget > 0:
            raise ValueError(f"AutoOptions.memory_budget={self.memory_budget!r}: bytes > 0.")

    def key(self) -> str:
        """The options that change a measured decision (the clock does not; ``runs`` is checked
        against the stored entry instead, see :func:`ntk_zoo.engine._measure.covers`). The
        default ``overhead`` adds nothing, so that keys written before it existed still match:
        with ``runs=1`` the candidates are the same as then."""
        key = f"within={self.within!r},repeats={self.repeats},budget={self.memory_budget!r}"
        return key if self.overhead == 0.05 else f"{key},overhead={self.overhead!r}"


def _avals(tree: Any) -> str:
    leaves, treedef = jax.tree.flatten(tree)
    shapes = [
        f"{getattr(a, 'dtype', type(a).__name__)}{list(getattr(a, 'shape', ()))}" for a in leaves
    ]
    return f"{treedef}|{shapes}"


def _program(f: Callable, params: Any, x: Any, kwargs: dict) -> str:
    jaxpr = jax.make_jaxpr(lambda p, x, kw: f(p, x, **kw))(params, x, kwargs)
    return _ADDRESS.sub("", str(jaxpr))


def fingerprint(problem: Problem, settings: dict[str, Any]) -> str:
    """A hex digest of the traced program of ``f`` at these shapes, of the shapes and dtypes,
    of ``settings`` (axes, ``vmap_axes``, options), of the device and of the versions."""
    import ntk_zoo

    p = problem
    device = jax.devices()[0]
    parts = [
        _program(p.f, p.params, p.x1, p.kwargs1),
        "x2=None" if p.x2 is None else _program(p.f, p.params, p.x2, p.kwargs2),
        _avals((p.params, p.x1, p.x2)),
        repr(sorted(settings.items())),
        f"{jax.default_backend()}|{device.platform}|{device.device_kind}",
        f"ntk_zoo={ntk_zoo.__version__}|jax={jax.__version__}",
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


_memory: dict[str, dict] = {}  # backend -> {fingerprint: entry}, this process's view
_loaded: set[str] = set()
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=5)


def wisdom_path(backend: str | None = None) -> pathlib.Path:
    """The wisdom file of ``backend`` (default ``jax.default_backend()``)."""
    backend = backend or jax.default_backend()
    return cache_path(backend).with_name(f"wisdom-{backend}.json")


def _valid(entry: Any) -> bool:
    from ntk_zoo.engine._method import Method

    runnable = {m.value for m in Method} - {Method.AUTO.value}
    return (
        isinstance(entry, dict)
        and entry.get("method") in runnable
        and isinstance(entry.get("times"), dict)
        and all(isinstance(t, int | float) for t in entry["times"].values())
    )


def _entries(backend: str) -> dict[str, dict]:
    if backend not in _loaded:
        _loaded.add(backend)
        path = wisdom_path(backend)
        stored: dict = {}
        if path.exists():
            try:
                data = json.loads(path.read_text())
                if not isinstance(data, dict) or data.get("schema") != SCHEMA:
                    raise ValueError(f"not a wisdom file of schema {SCHEMA}")
                stored = data["entries"]
                if not isinstance(stored, dict):
                    raise ValueError("entries must be a JSON object")
            except (OSError, ValueError, KeyError) as e:
                _warn_once(
                    str(path),
                    f"Ignoring the wisdom file {path} ({e}); auto measures again and rewrites "
                    "it. ntk_zoo.clear_wisdom() deletes it.",
                )
                stored = {}
        _memory[backend] = {**stored, **_memory.get(backend, {})}
    return _memory[backend]


def lookup(key: str, backend: str | None = None) -> dict | None:
    """The stored decision ``{"method", "times"}`` under ``key``, or ``None``."""
    backend = backend or jax.default_backend()
    entry = _entries(backend).get(key)
    if entry is None:
        return None
    if not _valid(entry):
        _warn_once(
            f"{backend}:{key}",
            f"Ignoring a stale wisdom entry in {wisdom_path(backend)} ({str(entry)[:80]}); "
            "auto measures again.",
        )
        return None
    return entry


def remember(key: str, entry: dict, backend: str | None = None) -> None:
    """Stores ``entry`` under ``key``, in memory and (atomically) in the wisdom file; a cache
    directory that cannot be written warns once and keeps it in memory only."""
    backend = backend or jax.default_backend()
    entries = _entries(backend)
    entries[key] = entry
    path = wisdom_path(backend)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"schema": SCHEMA, "entries": entries}, indent=1))
        tmp.replace(path)
    except OSError as e:
        _warn_once(
            f"write:{path}",
            f"Cannot write auto's wisdom to {path} ({e}); measured picks are kept in memory for "
            f"this process only. Set $NTK_ZOO_CACHE_DIR to a writable directory to keep them.",
        )


def clear_wisdom(backend: str | None = None) -> None:
    """Forgets ``auto``'s measured decisions: deletes the wisdom file of ``backend`` (default:
    every backend's, in the cache directory) and what this process holds in memory.

    Example:
      >>> import ntk_zoo
      >>> ntk_zoo.clear_wisdom()
    """
    backends = [backend] if backend else list(_memory)
    paths = (
        [wisdom_path(backend)] if backend else list(cache_path("_").parent.glob("wisdom-*.json"))
    )
    for b in backends:
        _memory.pop(b, None)
        _loaded.discard(b)
    if backend is None:
        _memory.clear()
        _loaded.clear()
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as e:
            _warn_once(f"clear:{path}", f"Cannot delete the wisdom file {path} ({e}).")
    _warned.clear()
