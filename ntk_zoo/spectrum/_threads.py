"""BLAS threads for the streamed spectrum: one for the many small products, the default for the
few large ones.

The out-of-core spectrum makes thousands of small LAPACK/BLAS calls (a ``t × t`` Cholesky per
tile column, triangular solves with a few right-hand sides, QRs of ``N × 16`` blocks). With
OpenBLAS's default threads each call hands work to a second thread and waits for it; when the
cores are shared that wait is a scheduler time slice, not microseconds: on the 2-core machine at
load 9, the 23 Cholesky calls on ``349 × 349`` tiles took 0.81 s each (18.7 s) and 1,081
triangular solves 19.6 s, against 4.8 s of CPU for the whole ``N³/3`` factorisation on one
thread. So the spectrum runs on one thread and gives only the factorisation's panel products
(``t × j·t`` by ``j·t × t``, ``N³/3`` flops in all) the threads BLAS had: those are the one place
a second core pays on a quiet machine. Under load they too lose (load 8.5: the factorisation took
43 s of wall and 14.7 s of CPU with BLAS's 2 threads, 9.4 s and 4.8 s with one);
``OPENBLAS_NUM_THREADS=1`` is the user's switch for a shared machine.

``threadpoolctl`` does the switching where it is installed (the ``cli`` extra declares it);
without it BLAS keeps its default everywhere, which is correct, only slower under load.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

_controller: Any = None


def _blas() -> Any:
    """threadpoolctl's controller of the loaded BLAS libraries, or ``None`` without it."""
    global _controller
    if _controller is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _controller = False
        else:
            import numpy  # noqa: F401  (their BLAS libraries must be loaded to be found)
            import scipy.linalg  # noqa: F401

            _controller = ThreadpoolController().select(user_api="blas")
    return _controller or None


@contextlib.contextmanager
def few_threads() -> Iterator[None]:
    """BLAS on one thread inside; :func:`all_threads` gives the default back for big products."""
    blas = _blas()
    if blas is None:
        yield
        return
    global _default
    before = _default
    _default = {lib.filepath: lib.num_threads for lib in blas.lib_controllers}
    try:
        with blas.limit(limits=1):
            yield
    finally:
        _default = before


_default: dict[str, int] | None = None  # each library's threads outside few_threads()


@contextlib.contextmanager
def all_threads() -> Iterator[None]:
    """Inside :func:`few_threads`: the threads each BLAS library had before it (else a no-op)."""
    blas = _blas()
    if blas is None or _default is None:
        yield
        return
    with blas.limit(limits=max(_default.values())):
        yield
