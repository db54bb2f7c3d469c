"""The one-time warnings of structured derivatives (a fallback warns once per cause)."""

from __future__ import annotations

import warnings
from collections.abc import Hashable

_WARNED: set[Hashable] = set()


def warn_once(key: Hashable, message: str, stacklevel: int = 2) -> None:
    """Warns ``message`` (a ``UserWarning``) the first time ``key`` is seen in this process."""
    if key in _WARNED:
        return
    _WARNED.add(key)
    warnings.warn(message, stacklevel=stacklevel + 1)
