"""The one-time warnings of structured derivatives (a fallback warns once per cause)."""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Hashable, Iterator

_WARNED: set[Hashable] = set()
_LOCAL = threading.local()  # .deferred: this thread's open deferrals, innermost last


def _deferrals() -> list[list[tuple[Hashable, str]]]:
    if not hasattr(_LOCAL, "deferred"):
        _LOCAL.deferred = []
    return _LOCAL.deferred


def warn_once(key: Hashable, message: str, stacklevel: int = 2) -> None:
    """Warns ``message`` (a ``UserWarning``) the first time ``key`` is seen in this process;
    inside :func:`deferred`, records it instead (nothing is marked as warned)."""
    deferrals = _deferrals()
    if deferrals:
        deferrals[-1].append((key, message))
        return
    if key in _WARNED:
        return
    _WARNED.add(key)
    warnings.warn(message, stacklevel=stacklevel + 1)


@contextlib.contextmanager
def deferred() -> Iterator[list[tuple[Hashable, str]]]:
    """Within the block (in this thread), :func:`warn_once` records ``(key, message)`` in the
    list it yields instead of warning: the cost model traces the method without warning, and
    the warnings are given (:func:`replay`) only if the method is then run."""
    record: list[tuple[Hashable, str]] = []
    _deferrals().append(record)
    try:
        yield record
    finally:
        _deferrals().pop()


def replay(record: list[tuple[Hashable, str]], stacklevel: int = 2) -> None:
    """Give the warnings that :func:`deferred` recorded, each once per process."""
    for key, message in record:
        warn_once(key, message, stacklevel + 1)
