"""Training-free architecture search: NTK proxies, baselines and rank correlations.

Scores follow one convention: **higher predicts higher accuracy** (``PROXIES`` gives each
proxy's sign and source), so a positive Kendall τ means a proxy works as published.
``run_search`` is the ``ntk-zoo nas`` job.
"""

from ntk_zoo.nas._plot import plot_proxies as plot_proxies
from ntk_zoo.nas._proxies import PROXIES as PROXIES
from ntk_zoo.nas._proxies import Proxy as Proxy
from ntk_zoo.nas._proxies import kernel_proxies as kernel_proxies
from ntk_zoo.nas._proxies import ntk_proxies as ntk_proxies
from ntk_zoo.nas._proxies import proxy_score as proxy_score
from ntk_zoo.nas._proxies import proxy_scores as proxy_scores
from ntk_zoo.nas._rank import average_ranks as average_ranks
from ntk_zoo.nas._rank import kendall_tau as kendall_tau
from ntk_zoo.nas._rank import spearman_rho as spearman_rho
from ntk_zoo.nas._search import correlations as correlations
from ntk_zoo.nas._search import ranking_table as ranking_table
from ntk_zoo.nas._search import run_search as run_search
from ntk_zoo.nas._space import candidate_name as candidate_name
from ntk_zoo.nas._space import sample_space as sample_space
from ntk_zoo.nas._train import TrainResult as TrainResult
from ntk_zoo.nas._train import train_classifier as train_classifier

__all__ = [
    "PROXIES",
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
