"""Spectra of NTK matrices: dense eigenvalues, matrix-free Lanczos, densities, per-layer shares."""

from ntk_zoo.spectrum._dense import Spectrum as Spectrum
from ntk_zoo.spectrum._dense import flatten_kernel as flatten_kernel
from ntk_zoo.spectrum._dense import spectrum as spectrum
from ntk_zoo.spectrum._density import SpectralDensity as SpectralDensity
from ntk_zoo.spectrum._density import spectral_density as spectral_density
from ntk_zoo.spectrum._lanczos import LanczosSpectrum as LanczosSpectrum
from ntk_zoo.spectrum._lanczos import lanczos as lanczos
from ntk_zoo.spectrum._layers import group_name as group_name
from ntk_zoo.spectrum._layers import layer_shares as layer_shares
from ntk_zoo.spectrum._layers import trace_shares as trace_shares
from ntk_zoo.spectrum._operator import NtkOperator as NtkOperator
from ntk_zoo.spectrum._operator import ntk_operator as ntk_operator
from ntk_zoo.spectrum._operator import trace as trace
from ntk_zoo.spectrum._plot import plot_spectral_density as plot_spectral_density
from ntk_zoo.spectrum._plot import plot_spectrum as plot_spectrum

__all__ = [
    "LanczosSpectrum",
    "NtkOperator",
    "SpectralDensity",
    "Spectrum",
    "flatten_kernel",
    "group_name",
    "lanczos",
    "layer_shares",
    "ntk_operator",
    "plot_spectral_density",
    "plot_spectrum",
    "spectral_density",
    "spectrum",
    "trace",
    "trace_shares",
]
