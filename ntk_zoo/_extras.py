"""Optional packages: imported on use, with an error that names the extra to install.

``pip install ntk-zoo`` brings JAX, NumPy, opt_einsum and tqdm only. Everything else is an
extra (see ``pyproject.toml``); a module that needs one imports it through :func:`require`,
so that a missing package reads ``pip install 'ntk-zoo[flax]'`` rather than a bare
``No module named 'flax'``.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable
from types import ModuleType

# The top-level module of each optional package, and the extra that installs it.
EXTRAS = {
    "absl": ("absl-py", "cli"),
    "diffrax": ("diffrax", "predict"),
    "flax": ("flax", "flax"),
    "haiku": ("dm-haiku", "haiku"),
    "matplotlib": ("matplotlib", "plot"),
    "ml_collections": ("ml_collections", "cli"),
    "optax": ("optax", "cli"),
    "sklearn": ("scikit-learn", "data"),
}


class MissingExtraError(ModuleNotFoundError):
    """An optional package is not installed; the message names the extra that installs it."""


def require(module: str, purpose: str) -> ModuleType:
    """Imports ``module`` (e.g. ``"flax.nnx"``), or raises :class:`MissingExtraError`.

    Only the absence of the optional package itself is translated; any other import error
    (a broken install, a version clash) is raised as it is.

    Args:
      module: a module of one of the packages in :data:`EXTRAS`.
      purpose: what needs it, for the message (e.g. ``"ntk_zoo.from_linen"``).

    Returns:
      The imported module.

    Example:
      >>> from ntk_zoo._extras import require
      >>> require("flax", "ntk_zoo.from_linen").__name__
      'flax'
      >>> require("no_such_package_anywhere", "a test")
      Traceback (most recent call last):
      ValueError: no extra provides 'no_such_package_anywhere'; add it to ntk_zoo._extras.EXTRAS
    """
    top = module.split(".")[0]
    if top not in EXTRAS:
        raise ValueError(f"no extra provides {top!r}; add it to ntk_zoo._extras.EXTRAS")
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] != top:
            raise
        distribution, extra = EXTRAS[top]
        raise MissingExtraError(
            f"{purpose} needs {distribution}, which is not installed: "
            f"pip install 'ntk-zoo[{extra}]' (or pip install {distribution})",
            name=e.name,
        ) from e


def require_all(modules: Iterable[str], purpose: str) -> None:
    """Checks, without importing them, that the top-level ``modules`` are installed; raises
    :class:`MissingExtraError` naming every missing one and the extras that install them.

    Example:
      >>> require_all(["flax", "optax"], "ntk-zoo")
    """
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        distributions = ", ".join(EXTRAS[m][0] for m in missing)
        extras = ",".join(sorted({EXTRAS[m][1] for m in missing}))
        raise MissingExtraError(
            f"{purpose} needs {distributions}, not installed: pip install 'ntk-zoo[{extras}]'",
            name=missing[0],
        )
