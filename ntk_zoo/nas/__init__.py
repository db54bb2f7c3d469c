"""Training-free architecture search: NTK proxies, baselines and rank correlations.

Scores follow one convention: **higher predicts higher accuracy** (``PROXIES`` gives each
proxy's sign and source), so a positive Kendall τ means a proxy works as published.

This package is library code: it never imports the zoo or the experiment layer. The
``ntk-zoo nas`` job that samples zoo architectures, trains them and writes the artefacts
(``run_search``, ``ranking_table``, ``sample_space``, ...) is in :mod:`ntk_zoo.jobs`.
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

__all__ = [
    "PROXIES",
    "PROXY_KERNELS",
    "Proxy",
    "average_ranks",
    "kendall_tau",
    "kernel_proxies",
    "ntk_proxies",
    "proxy_score",
    "proxy_scores",
    "spearman_rho",
]
