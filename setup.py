"""The package list, which pyproject.toml cannot write: a discovered tree plus one mapped dir.

The repository keeps `configs/` at its top level; the wheel installs it as the package data of
`ntk_zoo.jobs.configs` (so `ntk-zoo run --config mlp` finds it) rather than as a top-level
`configs` package in the user's site-packages. The metadata is all in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["ntk_zoo*", "architectures*"]), "ntk_zoo.jobs.configs"],
    package_dir={"ntk_zoo.jobs.configs": "configs"},
)
