"""Shapes shared by the predictors: targets and kernels as matrices, ``get``, regularisers.

A kernel over outputs of shape ``s`` with ``trace_axes`` removed has the interleaved shape
``zip(s', s')`` (``s'`` = ``s`` without the traced axes), as :func:`ntk_zoo.ntk_fn` returns it.
It is read as the matrix ``(D, D)`` with ``D = prod(s')`` (first-side axes, then second-side
axes), and taken as ``Θ ⊗ I`` over the traced axes: targets become ``(D, T)`` matrices, ``T`` the
product of the traced sizes, every column sharing the kernel.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from ntk_zoo.core import canonicalize_axes

KINDS = ("nngp", "ntk", "ntkgp")


def canonical_trace(trace_axes: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    """``trace_axes`` of ``y_train`` (``ndim`` axes) as sorted non-negative axes."""
    return canonicalize_axes(trace_axes, ndim, "trace_axes")


class TargetLayout(NamedTuple):
    """How targets of one shape map to ``(D, T)`` matrices and back."""

    shape: tuple[int, ...]
    trace: tuple[int, ...]

    @property
    def free(self) -> tuple[int, ...]:
        return tuple(i for i in range(len(self.shape)) if i not in self.trace)

    @property
    def trace_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[i] for i in self.trace)

    @property
    def kernel_shape(self) -> tuple[int, ...]:
        """The interleaved shape of the train-train kernel."""
        return tuple(s for i in self.free for s in (self.shape[i], self.shape[i]))

    def to_matrix(self, y: Any) -> np.ndarray:
        """``y`` (this shape or another free size; leading time axes allowed) → ``(..., D, T)``."""
        lead = y.ndim - len(self.shape)
        order = tuple(range(lead)) + tuple(lead + i for i in self.free + self.trace)
        y = y.transpose(order)
        return y.reshape((*y.shape[:lead], -1, math.prod(self.trace_shape)))

    def from_matrix(self, m: Any, free_shape: tuple[int, ...] | None = None) -> Any:
        """``(..., D, T)`` → targets of this shape (or with the free axes of ``free_shape``)."""
        free_shape = tuple(self.shape[i] for i in self.free) if free_shape is None else free_shape
        lead = m.shape[:-2]
        m = m.reshape((*lead, *free_shape, *self.trace_shape))
        positions = self.free + self.trace
        inverse = tuple(np.argsort(positions))
        return m.transpose(tuple(range(len(lead))) + tuple(len(lead) + i for i in inverse))

    def with_free(self, kernel_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The target shape for a test kernel ``(m…, n…)``: its first-side axes in place."""
        shape = list(kernel_shape[::2])
        for i in self.trace:
            shape.insert(i, self.shape[i])
        return tuple(shape)


def target_layout(y_train: Any, trace_axes: int | Sequence[int]) -> TargetLayout:
    y = np.asarray(y_train)
    if y.ndim == 0:
        raise ValueError("y_train is a scalar: it needs at least an example axis.")
    return TargetLayout(tuple(y.shape), canonical_trace(trace_axes, y.ndim))


def as_matrix(kernel: Any) -> Any:
    """An interleaved kernel ``(a0, b0, a1, b1, …)`` as the matrix ``(a0·a1…, b0·b1…)``."""
    k = kernel
    if k.ndim % 2:
        raise ValueError(
            f"A kernel has an even number of axes (interleaved pairs); got shape {k.shape}. "
            "Kernels with diagonal_axes cannot be used here: compute them with diagonal_axes=()."
        )
    first, second = tuple(range(0, k.ndim, 2)), tuple(range(1, k.ndim, 2))
    rows = math.prod(k.shape[i] for i in first)
    return k.transpose(first + second).reshape(rows, -1)


def from_matrix_pairs(m: Any, free_shape: tuple[int, ...]) -> Any:
    """``(..., D, D)``, ``D = prod(free_shape)`` → the interleaved ``(..., a0, a0, a1, a1…)``."""
    lead = m.shape[:-2]
    m = m.reshape((*lead, *free_shape, *free_shape))
    k, nl = len(free_shape), len(lead)
    order = tuple(range(nl)) + tuple(nl + j for i in range(k) for j in (i, k + i))
    return m.transpose(order)


def check_train_kernel(k: Any, layout: TargetLayout, name: str = "k_train_train") -> None:
    if tuple(k.shape) != layout.kernel_shape:
        raise ValueError(
            f"{name} has shape {tuple(k.shape)}, but y_train of shape {layout.shape} with "
            f"trace_axes={layout.trace} needs the kernel of shape {layout.kernel_shape} "
            "(the output axes interleaved, traced axes absent): compute it with x2=None, the "
            "same trace_axes and diagonal_axes=()."
        )


def check_test_kernel(k: Any, layout: TargetLayout, name: str = "k_test_train") -> None:
    train = layout.kernel_shape
    if k.ndim != len(train) or tuple(k.shape[1::2]) != train[1::2]:
        raise ValueError(
            f"{name} has shape {tuple(k.shape)}; with y_train of shape {layout.shape} and "
            f"trace_axes={layout.trace} it must be Θ(x_test, x_train), of shape "
            f"(m, {train[1]}, …) interleaved like the train kernel {train}."
        )


def regularise(k: np.ndarray, diag_reg: float, absolute: bool) -> np.ndarray:
    """``K + diag_reg·I``, ``diag_reg`` relative to ``tr K / D`` unless ``absolute``."""
    if diag_reg < 0:
        raise ValueError(f"diag_reg must be >= 0, got {diag_reg!r}.")
    scale = diag_reg if absolute else diag_reg * np.trace(k) / k.shape[0]
    return k + scale * np.eye(k.shape[0], dtype=k.dtype)


def canonical_get(get: str | Sequence[str] | None, allowed: Sequence[str]) -> tuple[bool, tuple]:
    """``(single, kinds)``: ``None`` means ``("nngp", "ntk")``; a string returns one value."""
    if get is None:
        get = ("nngp", "ntk")
    single = isinstance(get, str)
    kinds = (get,) if single else tuple(get)
    for g in kinds:
        if g not in allowed:
            raise ValueError(f"get={get!r}: each kind must be one of {tuple(allowed)}, got {g!r}.")
    if len(set(kinds)) != len(kinds) or not kinds:
        raise ValueError(f"get={get!r} must name each kind once, and at least one.")
    return single, kinds


@functools.cache
def named(name: str, fields: tuple[str, ...]) -> type:
    """One NamedTuple type per ``(name, fields)``, so results of equal ``get`` share a type."""
    return NamedTuple(name, [(f, Any) for f in fields])


def package(name: str, single: bool, kinds: tuple, values: Mapping[str, Any]) -> Any:
    if single:
        return values[kinds[0]]
    return named(name, kinds)(*(values[g] for g in kinds))


def kernel_of(kernels: Any, kind: str, name: str) -> np.ndarray:
    """The ``kind`` kernel in an array (taken as any kind), mapping or named tuple."""
    if hasattr(kernels, "shape") and hasattr(kernels, "dtype"):
        return np.asarray(kernels, np.float64)
    if isinstance(kernels, Mapping):
        value = kernels.get(kind)
    else:
        value = getattr(kernels, kind, None)
    if value is None:
        raise ValueError(
            f"{name} holds no {kind!r} kernel: pass a mapping or named tuple with a {kind!r} "
            "entry (e.g. from ntk_zoo.kernel_fn(f, get=('nngp', 'ntk')))."
        )
    return np.asarray(value, np.float64)


def kinds_in(kernels: Any) -> tuple[str, ...]:
    """The kinds a mapping or named tuple of kernels holds (not ``None``)."""
    if isinstance(kernels, Mapping):
        return tuple(k for k in ("nngp", "ntk") if kernels.get(k) is not None)
    return tuple(k for k in ("nngp", "ntk") if getattr(kernels, k, None) is not None)
