"""Datasets that need no download: they ship inside a PyPI package."""

from ntk_zoo.data._digits import load_digits as load_digits

__all__ = ["load_digits"]
