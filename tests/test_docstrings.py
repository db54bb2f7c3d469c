"""Every docstring example in the library runs and prints what it shows."""

import doctest
import importlib
import pkgutil

import pytest

import ntk_zoo

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(ntk_zoo.__path__, "ntk_zoo.")
    if m.name not in ("ntk_zoo.__main__",)
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_examples_exist():
    # Guards the test above against silently finding nothing to run.
    finder = doctest.DocTestFinder()
    found = sum(
        len(test.examples)
        for name in MODULES
        for test in finder.find(importlib.import_module(name))
    )
    assert found >= 15
