"""The experiment layer: the jobs behind the ``ntk-zoo`` commands.

``ntk-zoo run`` (:func:`run_experiment`), ``nas`` (:func:`run_search`), ``train``
(:func:`run_training`), ``demo`` and their
helpers (the NAS search space, a short optax training loop, artefact plots, workdir protection,
one-line errors, ``--help``) build zoo models from ``architectures``, load data, train and write
artefacts. This package (with ``ntk_zoo/cli.py``) is the only part of ``ntk_zoo`` that imports
``architectures``; the library packages never do, and ``import ntk_zoo`` does not import it.

``COMMANDS`` is the one table of commands: a job joins the command line by declaring a
:class:`ConfigCommand` (config file + workdir) or an :class:`ArgsCommand` (plain options) and
adding it there; its ``--help`` (usage, options, the config's fields and defaults, examples) comes
from that declaration.
"""

from ntk_zoo.jobs._classifier import TrainResult as TrainResult
from ntk_zoo.jobs._classifier import train_classifier as train_classifier
from ntk_zoo.jobs._command import ArgsCommand as ArgsCommand
from ntk_zoo.jobs._command import ConfigCommand as ConfigCommand
from ntk_zoo.jobs._command import UsageError as UsageError
from ntk_zoo.jobs._command import main as main
from ntk_zoo.jobs._command import one_line as one_line
from ntk_zoo.jobs._command import prepare_workdir as prepare_workdir
from ntk_zoo.jobs._demo import DEMO
from ntk_zoo.jobs._demo import demo as demo
from ntk_zoo.jobs._nas import NAS
from ntk_zoo.jobs._nas import correlations as correlations
from ntk_zoo.jobs._nas import ranking_table as ranking_table
from ntk_zoo.jobs._nas import run_search as run_search
from ntk_zoo.jobs._plot import plot_proxies as plot_proxies
from ntk_zoo.jobs._run import RUN
from ntk_zoo.jobs._run import per_layer_trace_share as per_layer_trace_share
from ntk_zoo.jobs._run import run_experiment as run_experiment
from ntk_zoo.jobs._run import summary as summary
from ntk_zoo.jobs._space import candidate_name as candidate_name
from ntk_zoo.jobs._space import enumerate_space as enumerate_space
from ntk_zoo.jobs._space import sample_space as sample_space
from ntk_zoo.jobs._train import TRAIN
from ntk_zoo.jobs._train import plot_dynamics as plot_dynamics
from ntk_zoo.jobs._train import run_training as run_training
from ntk_zoo.jobs._train import train_summary as train_summary

# The commands of `ntk-zoo`, in the order `ntk-zoo --help` lists them.
COMMANDS = {command.name: command for command in (RUN, NAS, TRAIN, DEMO)}

__all__ = [
    "COMMANDS",
    "ArgsCommand",
    "ConfigCommand",
    "TrainResult",
    "UsageError",
    "candidate_name",
    "correlations",
    "demo",
    "enumerate_space",
    "main",
    "one_line",
    "per_layer_trace_share",
    "plot_dynamics",
    "plot_proxies",
    "prepare_workdir",
    "ranking_table",
    "run_experiment",
    "run_search",
    "run_training",
    "sample_space",
    "summary",
    "train_classifier",
    "train_summary",
]
