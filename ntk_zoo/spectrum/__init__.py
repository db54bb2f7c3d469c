"""Spectra of NTK matrices: eigenvalues, conditioning, plots."""

from ntk_zoo.spectrum._dense import Spectrum as Spectrum
from ntk_zoo.spectrum._dense import flatten_kernel as flatten_kernel
from ntk_zoo.spectrum._dense import spectrum as spectrum
from ntk_zoo.spectrum._plot import plot_spectrum as plot_spectrum

__all__ = ["Spectrum", "flatten_kernel", "plot_spectrum", "spectrum"]
