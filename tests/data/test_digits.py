import numpy as np
import pytest

from ntk_zoo.data import load_digits


def test_digits_shapes_and_standardisation():
    x, y = load_digits()
    assert x.shape == (1797, 64) and y.shape == (1797,)
    assert x.dtype == np.float32 and set(np.unique(y)) == set(range(10))
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-5)


def test_digits_as_images():
    x, _ = load_digits(5, image=True, dtype="float64")
    assert x.shape == (5, 8, 8, 1) and x.dtype == np.float64


def test_digits_bad_n():
    with pytest.raises(ValueError, match=r"1\.\.1797"):
        load_digits(0)
