"""The blur as Tikhonov's solver sees it: ``M (psf * x)`` and its transpose, by real FFTs.

``x`` is the unknown picture on a grid of ``(Hu, Wu)`` pixels per channel that
holds the observed frame at ``frame`` (the frame itself for the zero boundary
model; the frame and a margin of the PSF's half-size for the unknown one), and
``M`` keeps the blurred frame. The FFTs run on a grid of at least
``(Hu + kh - 1, Wu + kw - 1)`` (rounded up to sizes FFTs are fast at), where the
circular convolution is the linear one of ``x`` taken as zero beyond its grid:
the blur is exactly ``convolve2d(x, psf, mode="same")`` on the frame, and the
transpose exactly its transpose. The PSF's transfer function is computed once;
an application costs one real FFT and one inverse (two each for the normal
matrix), whatever the PSF's size.
"""

from __future__ import annotations

import importlib

import numpy as np
import scipy.fft

from .device import Compute
from .psf import psf_grid


def fft_module(compute: Compute):
    """SciPy's FFTs on the CPU, cupyx's (cuFFT) on a GPU: the same functions, the same arguments."""
    return scipy.fft if compute.name == "cpu" else importlib.import_module("cupyx.scipy.fft")


def fast_grid(shape) -> tuple[int, ...]:
    """The least sizes at least ``shape`` that real FFTs are fast at (no large prime factors)."""
    return tuple(scipy.fft.next_fast_len(int(n), real=True) for n in shape)


class ObservedBlur:
    """``M (psf * x)`` for ``x`` of shape ``(B, Hu, Wu)``, its transpose and the normal matrix's data term.

    Parameters
    ----------
    psf : numpy.ndarray
        A validated PSF, cropped to its support.
    unknowns : (int, int)
        ``(Hu, Wu)``: the grid ``x`` lives on.
    frame : (slice, slice)
        Where the observed frame lies on that grid.
    compute : Compute
    """

    def __init__(self, psf: np.ndarray, unknowns: tuple[int, int], frame: tuple[slice, slice], compute: Compute):
        self._xp = compute.xp
        self._fft = fft_module(compute)
        self._unknowns = (slice(0, unknowns[0]), slice(0, unknowns[1]))
        self._frame = frame
        self._grid = fast_grid(n + k - 1 for n, k in zip(unknowns, psf.shape))
        self._transfer = self._fft.rfft2(compute.to_device(psf_grid(psf, self._grid)))

    def _convolve(self, x, transpose: bool = False):
        """The circular convolution of ``x`` (zero-padded to the FFT grid) with the PSF, or its transpose."""
        spectrum = self._fft.rfft2(x, s=self._grid)
        if transpose:  # times conj(transfer), without a second copy of it: conj(conj(s) t) = s conj(t)
            self._xp.conjugate(spectrum, out=spectrum)
            spectrum *= self._transfer
            self._xp.conjugate(spectrum, out=spectrum)
        else:
            spectrum *= self._transfer
        return self._fft.irfft2(spectrum, s=self._grid, overwrite_x=True)

    def forward(self, x):
        """``M (psf * x)``: the blurred frame, shape ``(B, H, W)`` (a view)."""
        return self._convolve(x)[(Ellipsis, *self._frame)]

    def adjoint(self, r):
        """The transpose of :meth:`forward` applied to ``r`` of shape ``(B, H, W)``: shape ``(B, Hu, Wu)`` (a view)."""
        padded = self._xp.zeros(r.shape[:-2] + self._grid)
        padded[(Ellipsis, *self._frame)] = r
        return self._convolve(padded, transpose=True)[(Ellipsis, *self._unknowns)]

    def normal(self, x):
        """``(M K)^T M K x``, the data term of the normal equations: shape ``(B, Hu, Wu)`` (a view)."""
        blurred = self._convolve(x)
        rows, cols = self._frame
        blurred[..., : rows.start, :] = 0.0
        blurred[..., rows.stop :, :] = 0.0
        blurred[..., : cols.start] = 0.0
        blurred[..., cols.stop :] = 0.0
        return self._convolve(blurred, transpose=True)[(Ellipsis, *self._unknowns)]
