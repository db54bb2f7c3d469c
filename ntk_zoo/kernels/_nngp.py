"""``nngp_fn`` and ``kernel_fn``: the empirical NNGP, alone or with the NTK in one program."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax

from ntk_zoo.core import Axes, PureFn, trace_size
from ntk_zoo.engine import KernelFn, Method, ntk_fn
from ntk_zoo.methods import contract

PyTree = Any

__all__ = ["NngpFn", "EmpiricalKernelFn", "kernel_fn", "nngp_fn"]


def _nngp(kernel: KernelFn, x1: PyTree, x2: PyTree | None, params: PyTree, kwargs: dict) -> PyTree:
    """The NNGP of ``kernel.f`` with ``kernel``'s axes: one forward pass per side."""
    problem = kernel.problem(x1, x2, params, **kwargs)  # checks shapes, canonical axes per leaf
    fx1 = problem.f(problem.params, problem.x1, **problem.kwargs1)
    fx2 = fx1 if problem.x2 is None else problem.f(problem.params, problem.x2, **problem.kwargs2)
    out = []
    for a, b, axes in zip(jax.tree.leaves(fx1), jax.tree.leaves(fx2), problem.axes):
        out.append((contract(a, b, axes) / trace_size(a.shape, axes)).astype(a.dtype))
    return jax.tree.unflatten(problem.fx_treedef, out)


def _nngp_kernels(
    kernel: KernelFn, x1: PyTree, x2: PyTree | None, params: PyTree, kwargs: dict, ntk: Any
) -> PyTree:
    """``NngpFn``'s ``KernelFn.kernels``: the NNGP alone."""
    return _nngp(kernel, x1, x2, params, kwargs)


def _empirical_kernels(
    kernel: KernelFn, x1: PyTree, x2: PyTree | None, params: PyTree, kwargs: dict, ntk: Any
) -> PyTree:
    """``EmpiricalKernelFn``'s ``KernelFn.kernels``: the kernels named by ``kernel.get``."""
    kinds = (kernel.get,) if isinstance(kernel.get, str) else kernel.get
    values = {g: _nngp(kernel, x1, x2, params, kwargs) if g == "nngp" else ntk() for g in kinds}
    if isinstance(kernel.get, str):
        return values[kernel.get]
    return _empirical_kernel_type(kinds)(*(values[g] for g in kinds))


class NngpFn(KernelFn):
    """``kernel_fn(x1, x2=None, params, **kwargs)`` returned by :func:`nngp_fn`.

    Called like the :class:`~ntk_zoo.KernelFn` of :func:`ntk_zoo.ntk_fn` (same keyword-argument
    rules, ``params`` defaulting to a ``PureFn``'s, one compiled program per input shapes), and
    accepted by :func:`ntk_zoo.batched`: a ``KernelFn`` whose ``kernels`` is the NNGP.
    """

    get = "nngp"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs, kernels=_nngp_kernels)

    def choose(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "The NNGP needs no NTK method: it is one forward pass per side. choose() applies to "
            "ntk_fn and kernel_fn."
        )


@functools.cache
def _empirical_kernel_type(fields: tuple[str, ...]) -> type:
    return NamedTuple("EmpiricalKernel", [(f, Any) for f in fields])


class EmpiricalKernelFn(KernelFn):
    """``kernel_fn(x1, x2=None, params, **kwargs)`` returned by :func:`kernel_fn`.

    Returns the kernel named by ``get`` (a string), or a named tuple ``EmpiricalKernel`` with
    one field per kind in ``get``'s order; each field holds the pytree of per-output-leaf
    kernels. :func:`ntk_zoo.batched` takes it with a string ``get``; for both kernels in blocks,
    batch :func:`nngp_fn` and :func:`ntk_zoo.ntk_fn` separately. It is ``base`` (an
    :func:`ntk_zoo.ntk_fn`'s ``KernelFn``) with ``kernels`` giving the NNGP beside its NTK.
    """

    def __init__(self, base: KernelFn, get: tuple[str, ...] | str):
        super().__init__(
            base.f,
            base.method,
            base.trace_axes,
            base.diagonal_axes,
            base.vmap_axes,
            base.sum_params,
            base.default_params,
            auto=base.auto,
            cotangents=base.cotangents,
            preconditioner=base.preconditioner,
            structured=base.structured,
            vector_products=base.vector_products,
            kernels=_empirical_kernels,
        )
        self.get = get


def nngp_fn(
    f: Callable[..., PyTree] | PureFn,
    *,
    trace_axes: Axes = (-1,),
    diagonal_axes: Axes = (),
    vmap_axes: Any = None,
) -> NngpFn:
    """Returns ``kernel_fn(x1, x2, params, **kwargs)``, the empirical NNGP of ``f``.

    ``K(x1, x2) = f(x1) f(x2)ᵀ``: the covariance of the outputs themselves, as neural-tangents'
    ``empirical_nngp_fn`` computes it, with the axis conventions of :func:`ntk_zoo.ntk_fn`:
    outputs of shapes ``(a0, a1, …)`` and ``(b0, b1, …)`` give the interleaved ``(a0, b0, a1,
    b1, …)``; ``trace_axes`` pairs are summed and divided by the product of their sizes (a mean
    over logits by default); ``diagonal_axes`` pairs keep their diagonal; a pytree output gets
    one kernel per leaf (no cross terms). The kernel has the outputs' dtype. Averaged over
    random initialisations (:func:`ntk_zoo.monte_carlo_kernel_fn`) it estimates the NNGP kernel
    of the infinitely wide network.

    Only forward passes are needed, which are exact on the whole batch even when examples
    interact: ``vmap_axes`` is checked against the inputs and outputs, and used by
    :func:`ntk_zoo.batched` to tile the examples into blocks.

    Args:
      f: ``f(params, x, **kwargs)``, or a :class:`~ntk_zoo.PureFn`.
      trace_axes: output axes to trace over (divided by their size).
      diagonal_axes: output axes of which only the diagonal is kept.
      vmap_axes: the batch axes, as for :func:`ntk_zoo.ntk_fn`.

    Returns:
      An :class:`NngpFn`; ``x2=None`` means ``x1`` (one forward pass).

    Example:
      >>> import jax.numpy as jnp
      >>> import ntk_zoo
      >>> f = lambda p, x: x @ p
      >>> x = jnp.array([[1.0, 0.0], [0.0, 2.0]])
      >>> ntk_zoo.nngp_fn(f)(x, None, jnp.eye(2)).tolist()  # x xᵀ / 2
      [[0.5, 0.0], [0.0, 2.0]]
      >>> ntk_zoo.nngp_fn(f, trace_axes=())(x, None, jnp.eye(2)).shape
      (2, 2, 2, 2)

    Reference: J. Lee et al., "Deep Neural Networks as Gaussian Processes", ICLR 2018.
    """
    base = ntk_fn(f, trace_axes=trace_axes, diagonal_axes=diagonal_axes, vmap_axes=vmap_axes)
    return NngpFn(
        base.f,
        Method.JACOBIAN_CONTRACTION,  # unused: no derivatives are taken
        base.trace_axes,
        base.diagonal_axes,
        base.vmap_axes,
        True,
        base.default_params,
    )


def kernel_fn(
    f: Callable[..., PyTree] | PureFn,
    *,
    get: str | Sequence[str] | None = ("nngp", "ntk"),
    method: Method | str = Method.AUTO,
    trace_axes: Axes = (-1,),
    diagonal_axes: Axes = (),
    vmap_axes: Any = None,
    cotangents: Any = None,
    preconditioner: Any = None,
) -> EmpiricalKernelFn:
    """Returns ``kernel_fn(x1, x2, params, **kwargs)`` computing the NNGP and/or the NTK of ``f``.

    Neural-tangents' ``empirical_kernel_fn`` with ``get`` fixed when the function is built:
    ``"nngp"`` (:func:`nngp_fn`), ``"ntk"`` (:func:`ntk_zoo.ntk_fn`) or both, with the same
    axis conventions. Both kernels come from **one compiled program**: one ``jax.jit``
    dispatch, one validation of ``params`` (finite, floating), one split of the keyword
    arguments. Inside it the NNGP's forward passes (one per side, on the whole batch) are traced
    beside the NTK's derivative passes; XLA's common-subexpression elimination may merge them
    with the forward pass the NTK method runs, but nothing more is shared. ``method`` and
    ``vmap_axes`` choose how the NTK is computed; the NNGP needs neither.

    Args:
      f: ``f(params, x, **kwargs)``, or a :class:`~ntk_zoo.PureFn`.
      get: ``"nngp"``, ``"ntk"``, a tuple of them, or ``None`` (both).
      method: the NTK method (see :func:`ntk_zoo.ntk_fn`).
      trace_axes: output axes to trace over (divided by their size).
      diagonal_axes: output axes of which only the diagonal is kept.
      vmap_axes: the batch axes (see :func:`ntk_zoo.ntk_fn`).
      cotangents: both kernels of the contracted output ``Σ v · f`` (see
        :func:`ntk_zoo.ntk_fn`): the NNGP ``(v_i·f_i)(v_j·f_j)``, the NTK ``v_iᵀ Θ v_j``.
      preconditioner: the NTK's ``D`` in ``J D Jᵀ`` (see :func:`ntk_zoo.ntk_fn`).

    Returns:
      An :class:`EmpiricalKernelFn`: a string ``get`` gives that kernel; a tuple gives a named
      tuple ``EmpiricalKernel`` with those fields, in that order (each a pytree of per-leaf
      kernels for pytree outputs), ready for :func:`ntk_zoo.predict.gp_inference`.

    Example:
      >>> import jax.numpy as jnp
      >>> import ntk_zoo
      >>> f = lambda p, x: jnp.tanh(x @ p["w"]) @ p["v"]
      >>> params = {"w": jnp.ones((3, 4)), "v": jnp.ones((4, 2))}
      >>> k = ntk_zoo.kernel_fn(f, vmap_axes=0)(jnp.ones((5, 3)), None, params)
      >>> k._fields, k.nngp.shape, k.ntk.shape
      (('nngp', 'ntk'), (5, 5), (5, 5))
    """
    if get is None:
        get = ("nngp", "ntk")
    kinds = (get,) if isinstance(get, str) else tuple(get)
    if not kinds or len(set(kinds)) != len(kinds) or not set(kinds) <= {"nngp", "ntk"}:
        raise ValueError(
            f"get={get!r}: give 'nngp', 'ntk' or a tuple of them (each once), or None for both."
        )
    base = ntk_fn(
        f,
        method=method,
        trace_axes=trace_axes,
        diagonal_axes=diagonal_axes,
        vmap_axes=vmap_axes,
        cotangents=cotangents,
        preconditioner=preconditioner,
    )
    return EmpiricalKernelFn(base, get if isinstance(get, str) else kinds)
