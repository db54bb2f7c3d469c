"""``gradient_descent``: function-space training for any loss, as an ODE solved by diffrax."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ntk_zoo._extras import require
from ntk_zoo.predict import _layout

__all__ = ["ODEState", "gradient_descent"]


class ODEState(NamedTuple):
    """The state of the function-space ODE: outputs and, with momentum, their velocities.

    ``qx_train`` / ``qx_test`` are ``d f / d τ`` (``τ`` the ODE's time, see
    :func:`gradient_descent`); they are ``None`` without momentum. Pass an ``ODEState`` to the
    predictor to start from (or resume) a state with velocities; it then returns one.
    """

    fx_train: Any
    fx_test: Any = None
    qx_train: Any = None
    qx_test: Any = None


def gradient_descent(
    loss: Callable[[jax.Array, jax.Array], jax.Array],
    k_train_train: Any,
    y_train: Any,
    learning_rate: float = 1.0,
    momentum: float | None = None,
    trace_axes: int | Sequence[int] = (-1,),
    *,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = 1_000_000,
) -> Callable[..., Any]:
    """Outputs of a linearised network trained by gradient descent on any loss, at times ``t``.

    Under the NTK ``Θ`` the outputs move in function space (Lee et al. 2019): gradient flow on
    ``loss(f(X), Y)`` with step ``η`` is the ODE

    * ``d f(X) / d τ = −Θ(X, X) ∇_f loss``, ``d f(x) / d τ = −Θ(x, X) ∇_f loss``,

    solved in ``τ = η·t``, so ``t`` counts steps (fractions allowed), as in neural-tangents'
    ``nt.predict.gradient_descent``. The loss carries its own normalisation: the mean squared
    error ``0.5·‖f − Y‖² / Y.size`` gives exactly :func:`gradient_descent_mse`. With
    ``momentum`` ``m`` (heavy ball, not Nesterov) the continuous-time limit of
    ``v ← m·v − η·∇``, ``f ← f + v`` is solved, in neural-tangents' units:

    * ``d²f / dτ² = −Θ ∇_f loss − ((1 − m)/√η) · d f / d τ``, ``τ = √η·t``, ``d f/dτ (0) = 0``,

    so ``t`` and ``η`` are no longer interchangeable. For small ``η`` momentum 0 tends to plain
    gradient descent, with an error of order ``η``.

    The ODE is solved with diffrax's 8th-order Dormand–Prince method (``Dopri8``) and a PID
    step-size controller (relative and absolute tolerances ``rtol``, ``atol``), all times in one
    solve. A ``(n, n)`` kernel (``trace_axes=(-1,)``) is taken as ``Θ ⊗ I`` over the logits; a
    ``(n, n, o, o)`` kernel (``trace_axes=()``) gives the exact linearised dynamics.

    Args:
      loss: ``loss(fx, y_train)``, differentiable in ``fx`` (``fx`` has ``y_train``'s shape); it
        should treat examples and outputs symmetrically when the kernel is traced.
      k_train_train: ``Θ(X, X)``, interleaved, ``trace_axes`` absent (from ``ntk_fn`` with
        ``x2=None``).
      y_train: targets.
      learning_rate: the step size ``η``.
      momentum: ``None`` for gradient descent, or the heavy-ball momentum ``m`` in ``[0, 1)``.
      trace_axes: output axes absent from the kernels.
      rtol: relative tolerance of the ODE solver; default ``1e-8`` in float64, ``1e-5`` in
        float32 (the kernel's and targets' dtype; tolerances near the float epsilon stall).
      atol: absolute tolerance of the ODE solver; defaults as ``rtol``.
      max_steps: the most solver steps before giving up.

    Returns:
      ``predict(t, fx_train_0=0.0, fx_test_0=None, k_test_train=None)``: ``t`` a number or an
      array of times in steps (finite, ``>= 0``, any order); ``fx_train_0`` the outputs on ``X``
      at initialisation (broadcast to ``y_train``'s shape) or an :class:`ODEState`;
      ``fx_test_0`` and ``k_test_train = Θ(x, X)`` for test predictions. Returns
      ``fx_train_t``, or ``(fx_train_t, fx_test_t)``, with ``t``'s shape in front (an
      :class:`ODEState` of such arrays if one was passed).

    Example:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from ntk_zoo import predict
      >>> k = jnp.array([[2.0, 1.0], [1.0, 2.0]])
      >>> y = jnp.array([[1.0], [-1.0]])
      >>> mse = lambda fx, y: 0.5 * jnp.sum((fx - y) ** 2) / y.size
      >>> ode = predict.gradient_descent(mse, k, y, learning_rate=0.5, rtol=1e-10, atol=1e-10)
      >>> closed = predict.gradient_descent_mse(k, y, learning_rate=0.5)
      >>> bool(np.allclose(ode(3.0, 0.0), closed(3.0, 0.0), atol=1e-8))
      True

    Reference: J. Lee et al., "Wide Neural Networks of Any Depth Evolve as Linear Models Under
    Gradient Descent", NeurIPS 2019 (function-space dynamics, momentum in continuous time).
    """
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate!r}.")
    if momentum is not None and not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1) (or None), got {momentum!r}.")
    y = jnp.asarray(y_train)
    layout = _layout.target_layout(y, trace_axes)
    k = jnp.asarray(k_train_train)
    _layout.check_train_kernel(k, layout)
    dtype = jnp.result_type(k.dtype, y.dtype, float)
    k_matrix = _layout.as_matrix(k).astype(dtype)
    if momentum is None:
        time_unit, friction = learning_rate, None
    else:
        time_unit = learning_rate**0.5
        friction = (1.0 - momentum) / time_unit
    default_tol = 1e-8 if jnp.finfo(dtype).eps < 1e-10 else 1e-5
    rtol = default_tol if rtol is None else rtol
    atol = default_tol if atol is None else atol
    settings = (loss, layout, friction is not None, rtol, atol, max_steps)
    try:
        solve = _solver(*settings)
    except TypeError:  # an unhashable loss: compiled for this predictor only
        solve = _solver.__wrapped__(*settings)

    def predict(
        t: Any,
        fx_train_0: Any = 0.0,
        fx_test_0: Any = None,
        k_test_train: Any = None,
    ) -> Any:
        given_state = isinstance(fx_train_0, ODEState)
        if given_state:
            if fx_test_0 is not None:
                raise ValueError(
                    "fx_test_0 is part of the ODEState passed as fx_train_0: leave it None."
                )
            state = fx_train_0
        else:
            state = ODEState(fx_train_0, fx_test_0)
        if state.fx_train is None:
            raise ValueError("fx_train_0 is needed: the training outputs drive the dynamics.")
        if (state.fx_test is None) != (k_test_train is None):
            raise ValueError(
                "Test predictions need both fx_test_0 (outputs on the test inputs at "
                "initialisation) and k_test_train (Θ(x_test, x_train)); got only one."
            )
        if momentum is None and (state.qx_train is not None or state.qx_test is not None):
            raise ValueError("The ODEState has velocities (qx_*), but momentum is None.")
        t_np = np.asarray(t, np.float64)
        if not np.all(np.isfinite(t_np)) or np.any(t_np < 0):
            raise ValueError(
                f"Times must be finite and >= 0 (the ODE is integrated up to them), got {t}."
            )

        def as_state_matrix(value, shape):
            return layout.to_matrix(jnp.broadcast_to(jnp.asarray(value, dtype), shape))

        k_test = test_free = f_test = q_train = q_test = None
        f_train = as_state_matrix(state.fx_train, y.shape)
        if k_test_train is not None:
            kt = jnp.asarray(k_test_train)
            _layout.check_test_kernel(kt, layout)
            test_free = kt.shape[::2]
            test_shape = layout.with_free(kt.shape)
            k_test = _layout.as_matrix(kt).astype(dtype)
            f_test = as_state_matrix(state.fx_test, test_shape)
        if momentum is not None:
            q_train = as_state_matrix(0.0 if state.qx_train is None else state.qx_train, y.shape)
            if k_test is not None:
                q0 = 0.0 if state.qx_test is None else state.qx_test
                q_test = as_state_matrix(q0, test_shape)

        unique, inverse = np.unique(t_np.ravel(), return_inverse=True)
        state0 = (f_train, f_test, q_train, q_test)
        if unique[-1] == 0:
            ys = jax.tree.map(lambda a: a[None].repeat(len(unique), 0), state0)
        else:
            # Save points padded to a power of two >= 2 (repeating the last): fewer compilations.
            size = max(2, 2 ** int(np.ceil(np.log2(len(unique)))))
            padded = np.pad(unique, (0, size - len(unique)), "edge")
            taus = jnp.asarray(padded * time_unit, dtype)
            ys = solve(state0, taus, k_matrix, k_test, y.astype(dtype), friction)
            ys = jax.tree.map(lambda a: a[: len(unique)], ys)
        at = lambda a: None if a is None else a[inverse].reshape(t_np.shape + a.shape[1:])
        ys = [at(a) for a in ys]
        fx_train_t = layout.from_matrix(ys[0])
        fx_test_t = None if ys[1] is None else layout.from_matrix(ys[1], test_free)
        if given_state:
            q_train_t = None if ys[2] is None else layout.from_matrix(ys[2])
            q_test_t = None if ys[3] is None else layout.from_matrix(ys[3], test_free)
            return ODEState(fx_train_t, fx_test_t, q_train_t, q_test_t)
        return fx_train_t if fx_test_t is None else (fx_train_t, fx_test_t)

    return predict


@functools.lru_cache(maxsize=64)
def _solver(
    loss: Callable,
    layout: _layout.TargetLayout,
    momentum: bool,
    rtol: float,
    atol: float,
    max_steps: int,
) -> Callable:
    """The compiled ODE solve, shared by predictors of the same loss, layout and settings."""
    diffrax = require("diffrax", "ntk_zoo.predict's ODE predictor")  # only this one needs it

    grad_loss = jax.grad(loss)

    def field(tau, state, args):
        k_train, k_test, y, friction = args
        fx_train, _, q_train, q_test = state
        g = layout.to_matrix(grad_loss(layout.from_matrix(fx_train), y))  # (D, T)
        force_train = -k_train @ g
        force_test = None if k_test is None else -k_test @ g
        if not momentum:
            return (force_train, force_test, None, None)
        acc_test = None if k_test is None else force_test - friction * q_test
        return (q_train, q_test, force_train - friction * q_train, acc_test)

    @jax.jit
    def solve(state0, taus, k_train, k_test, y, friction):
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(field),
            diffrax.Dopri8(),
            t0=0.0,
            t1=taus[-1],
            dt0=None,
            y0=state0,
            args=(k_train, k_test, y, friction),
            saveat=diffrax.SaveAt(ts=taus),
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=max_steps,
        )
        return solution.ys

    return solve
