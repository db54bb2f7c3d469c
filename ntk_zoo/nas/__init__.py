"""Training-free architecture search: NTK proxies, baselines and rank correlations.

Scores follow one convention: **higher predicts higher accuracy** (``PROXIES`` gives each
proxy's sign and source), so a positive Kendall τ means a proxy works as published.

This package is library code (it never imports the zoo). The ``ntk-zoo nas`` job that samples
zoo architectures, trains them and writes the artefacts lives in :mod:`ntk_zoo.jobs`; its names
(``run_search``, ``ranking_table``, ``correlations``, ``sample_space``, ``candidate_name``,
``train_classifier``, ``TrainResult``, ``plot_proxies``) are still reachable here, imported from
there on first use.
"""

from ntk_zoo.nas._proxies import KERNELS as PROXY_KERNELS
from ntk_zoo.nas._proxies import PROXIES as PROXIES
from ntk_zoo.nas._proxies import Proxy as Proxy
from ntk_zoo.nas._proxies import kernel_proxies as kernel_proxies
from ntk_zoo.nas._proxies import ntk_proxies as ntk_proxies
from ntk_zoo.nas._proxies import proxy_score as proxy_score
from ntk_zoo.nas._proxies import proxy_scores as proxy_scores
from ntk_zoo.nas._rank import average_ranks as average_ranks
from ntk_zoo.nas._rank import kendall_tau as kendall_tau
from ntk_zoo.nas._rank import spearman_rho as spearman_rho

# The nas job's names, kept here for existing users: resolved lazily from ntk_zoo.jobs so that
# `import ntk_zoo` (and this package) never imports the experiment layer or the zoo.
_FROM_JOBS = (
    "TrainResult",
    "candidate_name",
    "correlations",
    "plot_proxies",
    "ranking_table",
    "run_search",
    "sample_space",
    "train_classifier",
)


def __getattr__(name: str):
    if name in _FROM_JOBS:
        import ntk_zoo.jobs

        return getattr(ntk_zoo.jobs, name)
    raise AttributeError(f"module 'ntk_zoo.nas' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_FROM_JOBS])


__all__ = [
    "PROXIES",
    "PROXY_KERNELS",
    "Proxy",
    "TrainResult",
    "average_ranks",
    "candidate_name",
    "correlations",
    "kendall_tau",
    "kernel_proxies",
    "ntk_proxies",
    "plot_proxies",
    "proxy_score",
    "proxy_scores",
    "ranking_table",
    "run_search",
    "sample_space",
    "spearman_rho",
    "train_classifier",
]
