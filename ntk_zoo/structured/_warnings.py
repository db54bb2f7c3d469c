"""The one-time warnings of structured derivatives (a fallback warns once per cause)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Hashable, Iterator

_WARNED: set[Hashable] = set()
_DEFERRED: list[list[tuple[Hashable, str]]] = []  # innermost deferral last


def warn_once(key: Hashable, message: str, stacklevel: int = 2) -> None:
    """Warns ``message`` (a ``UserWarning``) the first time ``key`` is seen in this process;
    inside :func:`deferred`, records it instead (nothing is marked as warned)."""
    if _DEFERRED:
        _DEFERRED[-1].append((key, message))
        return
    if key in _WARNED:
        return
    _WARNED.add(key)
    warnings.warn(message, stacklevel=stacklevel + 1)


@contextlib.contextmanager
def deferred() -> Iterator[list[tuple[Hashable, str]]]:
    """Within the block, :func:`warn_once` records ``(key, message)`` in the list it yields
    instead of warning: the cost model traces the method without warning, and the warnings are
    given (:func:`replay`) only if the method is then run."""
    record: list[tuple[Hashable, str]] = []
    _DEFERRED.append(record)
    try:
        yield record
    finally:
        _DEFERRED.pop()


def replay(record: list[tuple[Hashable, str]], stacklevel: int = 2) -> None:
    """Give the warnings that :func:`deferred` recorded, each once per process."""
    for key, message in record:
        warn_once(key, message, stacklevel + 1)
