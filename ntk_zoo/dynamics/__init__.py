"""How an NTK moves: distances between kernels, alignment with the labels, spectral change.

Measures for the finite-width dynamics of the empirical NTK during training (all NumPy on formed
kernels, ``(n, n)`` or ``(n, n, o, o)``, except the matrix-free alignment): the kernel distance
of Fort et al. (2020), the centred kernel–target alignment of Cortes, Mohri and Rostamizadeh
(2012), relative changes of ``tr Θ``, ``λ_max`` and ``κ``, and the overlap of top eigenspaces.
"""

from ntk_zoo.dynamics._alignment import kernel_alignment as kernel_alignment
from ntk_zoo.dynamics._alignment import (
    kernel_alignment_matrix_free as kernel_alignment_matrix_free,
)
from ntk_zoo.dynamics._alignment import label_matrix as label_matrix
from ntk_zoo.dynamics._compare import SpectralChange as SpectralChange
from ntk_zoo.dynamics._compare import kernel_distance as kernel_distance
from ntk_zoo.dynamics._compare import spectral_change as spectral_change
from ntk_zoo.dynamics._compare import top_eigenvectors as top_eigenvectors
from ntk_zoo.dynamics._compare import top_k_overlap as top_k_overlap

__all__ = [
    "SpectralChange",
    "kernel_alignment",
    "kernel_alignment_matrix_free",
    "kernel_distance",
    "label_matrix",
    "spectral_change",
    "top_eigenvectors",
    "top_k_overlap",
]
