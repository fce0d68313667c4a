"""How much white noise a blurred image carries.

Two estimates, both of which can only mistake picture content for noise (never
the reverse), so the smaller is kept:

- **Haar**: Donoho's median absolute deviation of the finest diagonal Haar
  wavelet coefficients. Needs nothing but the image; fooled by texture.
- **Spectral**, when the PSF is known: the blur leaves almost nothing of the picture
  at the frequencies where ``|K(f)|^2 / |D(f)|^2`` is smallest (``K`` the PSF's
  transfer function, ``|D|^2`` the gradient's, which a natural picture's power
  spectrum falls like); there the Hann-windowed periodogram is the noise's, flat
  at ``sigma^2``, exponentially distributed, with median ``sigma^2 ln 2``.

``bench/deblur_benchmark.py`` prints how close both come to the true noise level
on its pictures, PSFs and noise levels.
"""

from __future__ import annotations

import math

import numpy as np

#: The share of frequencies (the least blurred-signal ones) the spectral estimate uses, and their least number.
SPECTRAL_SHARE = 0.02
SPECTRAL_MIN_COUNT = 64
#: Images smaller than this on a side get only the Haar estimate (too few frequencies).
SPECTRAL_MIN_SIDE = 8


def quantization_noise(dtype) -> float:
    """The standard deviation of the rounding error every image stored as ``dtype`` carries (in ``[0, 1]`` units).

    A uniform error of one step: ``step / sqrt(12)``, the step ``1 / max`` for
    integer types and the machine epsilon for floating ones.
    """
    dtype = np.dtype(dtype)
    step = 1.0 / np.iinfo(dtype).max if dtype.kind in "ui" else float(np.finfo(dtype).eps)
    return step / math.sqrt(12)


def haar_noise(blurred: np.ndarray) -> float:
    """Noise standard deviation from the finest diagonal Haar coefficients, pooled over the batch.

    ``(x[2i, 2j] - x[2i, 2j+1] - x[2i+1, 2j] + x[2i+1, 2j+1]) / 2`` has the noise's
    standard deviation for white noise and is near zero on smooth (blurred)
    content; ``median(|.|) / 0.6745`` is robust to the edges that remain.

    Parameters
    ----------
    blurred : numpy.ndarray, shape (B, H, W)

    Returns
    -------
    float
        0.0 for images less than 2 pixels on a side.
    """
    h, w = blurred.shape[-2] // 2 * 2, blurred.shape[-1] // 2 * 2
    x = blurred[..., :h, :w]
    diagonal = (x[..., 0::2, 0::2] - x[..., 0::2, 1::2] - x[..., 1::2, 0::2] + x[..., 1::2, 1::2]) / 2
    return float(np.median(np.abs(diagonal)) / 0.6745) if diagonal.size else 0.0


def gradient_symbol(shape: tuple[int, int]) -> np.ndarray:
    """``|D(f)|^2`` on the ``shape`` FFT grid: the transfer function of the squared forward differences."""
    fy, fx = (2 - 2 * np.cos(2 * np.pi * np.fft.fftfreq(n)) for n in shape)
    return fy[:, None] + fx[None, :]


def blur_symbol(psf: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``|K(f)|^2`` on the ``shape`` FFT grid (the PSF wrapped around if larger)."""
    grid = np.zeros(shape)
    kh, kw = psf.shape
    rows = (np.arange(kh) - kh // 2) % shape[0]
    cols = (np.arange(kw) - kw // 2) % shape[1]
    np.add.at(grid, (rows[:, None], cols[None, :]), psf)
    return np.abs(np.fft.fft2(grid)) ** 2


def spectral_noise(blurred: np.ndarray, psf: np.ndarray) -> float:
    """Noise standard deviation from the periodogram where the blur has left the least picture.

    Parameters
    ----------
    blurred : numpy.ndarray, shape (B, H, W)
        Each of ``H``, ``W`` at least :data:`SPECTRAL_MIN_SIDE`.
    psf : numpy.ndarray
        The blur, in the command line's PSF convention.

    Returns
    -------
    float
    """
    shape = blurred.shape[-2:]
    window = np.outer(np.hanning(shape[0]), np.hanning(shape[1]))
    centred = blurred - blurred.mean(axis=(-2, -1), keepdims=True)
    periodogram = np.abs(np.fft.fft2(centred * window)) ** 2 / np.sum(window**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        signal = blur_symbol(psf, shape) / gradient_symbol(shape)
    signal.flat[0] = np.inf  # the mean, removed above
    count = max(SPECTRAL_MIN_COUNT, int(SPECTRAL_SHARE * signal.size))
    quiet = np.argsort(signal, axis=None)[:count]
    values = periodogram.reshape(periodogram.shape[0], -1)[:, quiet]
    return math.sqrt(float(np.median(values)) / math.log(2))


def estimate_noise(blurred: np.ndarray, psf: np.ndarray | None = None) -> float:
    """The noise standard deviation of ``blurred``: the smaller of the Haar and (with ``psf``) spectral estimates.

    Parameters
    ----------
    blurred : numpy.ndarray, shape (B, H, W)
        The channels of one image; one estimate for all of them.
    psf : numpy.ndarray or None
        The blur; without it, only the Haar estimate.

    Returns
    -------
    float
    """
    haar = haar_noise(blurred)
    if psf is None or min(blurred.shape[-2:]) < SPECTRAL_MIN_SIDE:
        return haar
    return min(haar, spectral_noise(blurred, psf))
