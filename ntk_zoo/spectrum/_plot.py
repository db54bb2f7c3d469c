"""Eigenvalue plots (matplotlib, headless)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ntk_zoo._extras import require

if TYPE_CHECKING:
    from ntk_zoo.spectrum._density import SpectralDensity


def plot_spectrum(eigenvalues: np.ndarray, path: str, *, title: str = "NTK spectrum") -> str:
    """Saves a log-scale plot of the eigenvalues, largest first; returns ``path``."""
    Figure = require("matplotlib.figure", "ntk_zoo.spectrum plots").Figure  # no pyplot

    eig = np.asarray(eigenvalues)
    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.subplots()
    positive = eig > 0
    index = np.arange(1, eig.size + 1)
    ax.semilogy(index[positive], eig[positive], ".-", lw=1, ms=3)
    if (~positive).any():
        ax.text(
            0.98,
            0.95,
            f"{(~positive).sum()} eigenvalues <= 0 not shown",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=8,
        )
    ax.set(xlabel="index (largest first)", ylabel="eigenvalue", title=title)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_spectral_density(
    density: SpectralDensity, path: str, *, title: str = "NTK spectral density"
) -> str:
    """Saves a plot of the smoothed density (log scale) with the quadrature nodes; returns
    ``path``."""
    Figure = require("matplotlib.figure", "ntk_zoo.spectrum plots").Figure  # no pyplot

    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.subplots()
    positive = density.density > 0
    ax.semilogy(density.grid[positive], density.density[positive], lw=1, label="smoothed density")
    floor = density.density[positive].min() if positive.any() else 1.0
    ax.plot(
        density.nodes.ravel(),
        np.full(density.nodes.size, floor),
        "|",
        ms=8,
        alpha=0.5,
        label="quadrature nodes",
    )
    ax.set(xlabel="eigenvalue", ylabel="density", title=title)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path
