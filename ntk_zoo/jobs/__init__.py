"""The experiment layer: the jobs behind the ``ntk-zoo`` commands (zoo models, data, artefacts).

Unlike the library packages, the jobs may import the ``architectures`` zoo.
"""

from ntk_zoo.jobs._train import run_training as run_training
from ntk_zoo.jobs._train import train_summary as train_summary

__all__ = ["run_training", "train_summary"]
