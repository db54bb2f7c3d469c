"""Projected gradient features: ``Φ = J P / √dim`` with ``E[Φ Φᵀ] = Θ``, ``P`` never stored.

What data attribution (TRAK, LESS, LoGra) and kernel sketches compute instead of the exact
kernel: :func:`gradient_features` (whole datasets block by block into a resumable ``.npy``),
:func:`kernel_from_features` and :func:`feature_error` (against the exact kernel on a subset).
"""

from ntk_zoo.features._features import gradient_features as gradient_features
from ntk_zoo.features._kernel import FeatureError as FeatureError
from ntk_zoo.features._kernel import feature_error as feature_error
from ntk_zoo.features._kernel import kernel_from_features as kernel_from_features

__all__ = ["FeatureError", "feature_error", "gradient_features", "kernel_from_features"]
