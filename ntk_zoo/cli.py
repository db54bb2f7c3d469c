"""The ``ntk-zoo`` command line (also ``python -m ntk_zoo``).

``ntk-zoo run --config configs/<family>.py[:args] --workdir DIR [--config.x.y=value ...]``
builds a zoo model from an ml_collections config, computes its NTK on the data with a progress
bar, and writes ``kernel.npz``, ``report.json`` and ``spectrum.png`` to ``DIR``.

``ntk-zoo nas --config configs/nas.py[:args] --workdir DIR`` samples zoo architectures, scores
each by NTK proxies at initialisation, trains each briefly, and writes ``nas.json``,
``ranking.md`` and ``proxies.png`` (proxies against accuracy, with Kendall τ).

``ntk-zoo train --config configs/train.py[:args] --workdir DIR`` trains zoo models of several
widths on digits and records how their NTK moves (distance from init, alignment with the labels,
κ) and how far they stray from their linearisation; writes ``dynamics.json``, ``dynamics.png``
and ``kernels.npz``.

``ntk-zoo demo`` computes the NTK of a small MLP on scikit-learn's digits by every available
method, checks that they agree and prints their timings.

``--config`` takes a shipped config by name (``--config mlp:width=64``; ``ntk-zoo run --help``
lists them) or a path to a config file. The command line needs the ``cli`` extra
(``pip install 'ntk-zoo[cli]'``).

``ntk-zoo <command> --help`` prints the command's usage, options, config fields with their
defaults and examples. The commands and their jobs live in :mod:`ntk_zoo.jobs` (its
``COMMANDS`` table); this module is only the entry point.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``ntk-zoo`` on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    from ntk_zoo._extras import require_all

    require_all(("ml_collections", "absl", "optax", "flax", "matplotlib", "sklearn"), "ntk-zoo")
    from ntk_zoo.jobs import COMMANDS
    from ntk_zoo.jobs import main as dispatch

    return dispatch(COMMANDS, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
