"""Predictions of trained networks from their kernels, with neural-tangents' conventions.

* :func:`gradient_descent_mse`: gradient descent on the MSE, in closed form (eigenbasis).
* :func:`gradient_descent`: gradient descent (optionally with momentum) on any loss, as an ODE.
* :func:`gp_inference`: NNGP / NTK / NTKGP posteriors (Cholesky).
* :func:`gradient_descent_mse_ensemble`: mean and covariance of an ensemble trained on the MSE,
  from a kernel function.
* :func:`max_learning_rate`: the largest learning rate for which gradient descent converges.

Shapes: kernels are interleaved over the output axes with ``trace_axes`` absent, as
:func:`ntk_zoo.ntk_fn` returns them; time ``t`` counts steps of size ``learning_rate``.
"""

from ntk_zoo.predict._ensemble import gradient_descent_mse_ensemble as gradient_descent_mse_ensemble
from ntk_zoo.predict._ensemble import max_learning_rate as max_learning_rate
from ntk_zoo.predict._gp import Gaussian as Gaussian
from ntk_zoo.predict._gp import gp_inference as gp_inference
from ntk_zoo.predict._mse import gradient_descent_mse as gradient_descent_mse
from ntk_zoo.predict._ode import ODEState as ODEState
from ntk_zoo.predict._ode import gradient_descent as gradient_descent

__all__ = [
    "Gaussian",
    "ODEState",
    "gp_inference",
    "gradient_descent",
    "gradient_descent_mse",
    "gradient_descent_mse_ensemble",
    "max_learning_rate",
]
