"""scikit-learn's handwritten digits: 1,797 greyscale 8×8 images in 10 classes."""

from __future__ import annotations

import numpy as np

from ntk_zoo._extras import require


def load_digits(
    n: int | None = None, *, image: bool = False, dtype: str = "float32"
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` digits (all 1,797 if ``None``), standardised per pixel.

    Args:
      n: number of examples to return.
      image: return ``(n, 8, 8, 1)`` images instead of ``(n, 64)`` vectors.
      dtype: float dtype of the inputs.

    Returns:
      ``(x, y)``: inputs and integer labels in ``0..9``.

    Example:
      >>> x, y = load_digits(100)
      >>> x.shape, y.shape
      ((100, 64), (100,))
    """
    datasets = require("sklearn.datasets", "ntk_zoo.data.load_digits")  # ships its data

    data = datasets.load_digits()
    x, y = data.data, data.target
    if n is not None:
        if not 0 < n <= len(x):
            raise ValueError(f"n must be in 1..{len(x)} for the digits dataset, got {n}.")
        x, y = x[:n], y[:n]
    x = (x - data.data.mean(0)) / (data.data.std(0) + 1e-8)
    x = x.astype(dtype)
    if image:
        x = x.reshape(-1, 8, 8, 1)
    return x, y.astype(np.int32)
