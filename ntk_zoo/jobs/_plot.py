"""Scatter plots of proxy scores against trained accuracy (matplotlib, headless)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ntk_zoo.nas import PROXIES, kendall_tau


def plot_proxies(
    candidates: Sequence[dict[str, Any]], path: str, *, title: str = "Proxies vs accuracy"
) -> str:
    """One panel per proxy: its score (higher predicts better) against accuracy; returns ``path``.

    ``candidates`` are entries of ``nas.json`` (``scores``, ``accuracy``, ``model.family``).
    Each panel's title carries its Kendall τ over all candidates; points with an infinite score
    (κ = inf) are counted in the panel but cannot be drawn.
    """
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    acc = np.array([c["accuracy"] for c in candidates])
    families = [c["model"]["family"] for c in candidates]
    colours = {f: f"C{i}" for i, f in enumerate(dict.fromkeys(families))}
    cols = 3
    rows = math.ceil(len(PROXIES) / cols)
    fig = Figure(figsize=(4 * cols, 3.3 * rows), dpi=110)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (name, proxy) in zip(axes.flat, PROXIES.items()):
        score = np.array([c["scores"][name] for c in candidates])
        tau = kendall_tau(score, acc) if len(score) > 1 else float("nan")
        finite = np.isfinite(score)
        for family, colour in colours.items():
            mask = finite & np.array([f == family for f in families])
            ax.scatter(score[mask], acc[mask], s=22, c=colour, label=family)
        if (~finite).any():
            ax.text(0.02, 0.02, f"{(~finite).sum()} at ±inf", transform=ax.transAxes, fontsize=8)
        ax.set(title=f"{proxy.label}: τ = {tau:+.2f}", xlabel=proxy.label, ylabel="accuracy")
        ax.grid(True, alpha=0.3)
    for ax in axes.flat[len(PROXIES) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    return path
