"""Datasets that need no download: they ship inside a PyPI package."""

from ntk_zoo.data._digits import load_digits as load_digits
from ntk_zoo.data._load import load_dataset as load_dataset

__all__ = ["load_dataset", "load_digits"]
