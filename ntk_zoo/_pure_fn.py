"""Compatibility shim: ``PureFn`` lives in :mod:`ntk_zoo.core` (import it from there, or as
``ntk_zoo.PureFn``). Kept only for ``ntk_zoo/nas/_train.py`` until it adopts the public name."""

from ntk_zoo.core import PureFn as PureFn

__all__ = ["PureFn"]
