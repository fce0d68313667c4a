"""Point-spread functions: load or generate them, and turn them into causal weights.

The PSF convention is scikit-image's (its ``restoration`` functions)::

    blurred = scipy.signal.convolve2d(sharp, psf, mode="same")

a true convolution, the PSF centred at ``(kh // 2, kw // 2)``, zero boundary. Both
PSF dimensions must be odd, so that centre is unambiguous.

A PSF whose support lies in one quadrant around its centre, with a nonzero
centre, is a causal convolution: for ``psf[r, c] != 0`` only where
``r >= kh // 2`` and ``c >= kw // 2``, ``blurred[i, j]`` reads ``sharp`` above and to
the left of ``(i, j)``, which is ``invconv_cupy.conv`` with orientation ``"TL"``
and the weight ``psf[kh//2:, kw//2:][::-1, ::-1]`` (a true convolution is a
cross-correlation with the flipped kernel). The other quadrants give ``"TR"``,
``"BL"`` and ``"BR"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import invconv_cupy as ic

from .errors import CliError

#: The quadrant of a PSF (rows, columns) that each orientation reads, as
#: "low" (up to and including the centre) or "high" (from the centre on).
_QUADRANT = {"TL": ("high", "high"), "TR": ("high", "low"), "BL": ("low", "high"), "BR": ("low", "low")}

#: The orientation whose causal convolution is the transpose of another's (with the weight flipped).
TRANSPOSED = {"TL": "BR", "BR": "TL", "TR": "BL", "BL": "TR"}

#: File suffixes read as numbers (everything else is read as an image).
_TEXT_SUFFIXES = (".csv", ".txt")

#: Samples per pixel along a motion-blur line.
_MOTION_SAMPLES = 16


@dataclass(frozen=True)
class CausalKernel:
    """A single-channel causal convolution: a ``(KH, KW)`` weight and its orientation.

    ``weight`` is in the layout of ``invconv_cupy.conv`` (a cross-correlation
    weight, anchor tap at the orientation's corner of the kernel).
    """

    weight: np.ndarray
    orientation: str

    def as_weight(self, xp=np):
        """The ``(1, 1, KH, KW)`` float64 weight ``invconv_cupy`` takes, as an ``xp`` array."""
        return xp.asarray(self.weight[None, None], dtype=xp.float64)

    def transposed(self) -> CausalKernel:
        """The kernel whose ``conv`` is the transpose of this one's (and likewise ``solve``)."""
        return CausalKernel(self.weight[::-1, ::-1].copy(), TRANSPOSED[self.orientation])


def validate_psf(psf, source: str) -> np.ndarray:
    """Check a PSF and return it as a float64 array.

    Parameters
    ----------
    psf : array_like
        The candidate PSF.
    source : str
        Where it came from, for error messages.

    Returns
    -------
    numpy.ndarray
        A 2-D float64 array with odd dimensions, finite entries and a nonzero sum.

    Raises
    ------
    CliError
        Naming ``source`` and what is wrong.
    """
    psf = np.asarray(psf)
    if psf.dtype.kind not in "biuf":
        raise CliError(f"PSF {source} must hold real numbers, got dtype {psf.dtype}")
    psf = psf.astype(np.float64)
    if psf.ndim != 2:
        raise CliError(f"PSF {source} must be a 2-D array, got shape {psf.shape}")
    if psf.shape[0] % 2 == 0 or psf.shape[1] % 2 == 0:
        raise CliError(
            f"PSF {source} must have odd height and width (its centre is (kh//2, kw//2)), got shape {psf.shape}"
        )
    if not np.isfinite(psf).all():
        raise CliError(f"PSF {source} contains NaN or Inf")
    if psf.sum() == 0:
        raise CliError(f"PSF {source} sums to zero")
    return psf


def load_psf(path: str | Path) -> np.ndarray:
    """Read a PSF from ``.npy``, ``.csv``/``.txt`` (numbers) or an image file.

    Numbers are kept as they are; an image PSF is scaled to sum to one.

    Raises
    ------
    CliError
        For a missing or unreadable file or an invalid PSF.
    """
    from .images import read_image

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".npy", *_TEXT_SUFFIXES):
        if not path.is_file():
            raise CliError(f"PSF file {path} does not exist")
        try:
            if suffix == ".npy":
                psf = np.load(path, allow_pickle=False)
            else:
                psf = np.loadtxt(path, delimiter="," if suffix == ".csv" else None, ndmin=2)
        except (OSError, ValueError, EOFError) as exc:
            raise CliError(f"cannot read PSF file {path}: {exc}") from None
        return validate_psf(psf, str(path))
    image = read_image(path)
    if image.data.shape[0] != 1:
        raise CliError(f"PSF image {path} must be greyscale, got {image.data.shape[0]} channels")
    psf = validate_psf(image.data[0], str(path))
    return psf / psf.sum()


def motion_psf(length: float, angle: float, decay: float = 1.0) -> np.ndarray:
    """A one-sided (causal) linear motion blur, anti-aliased.

    The line runs from the PSF's centre for ``length - 1`` pixels; it is sampled
    every 1/16 pixel and each sample is spread bilinearly over its four
    neighbouring pixels.

    Parameters
    ----------
    length : float
        Extent of the blur in pixels, at least 1 (``1`` is no blur).
    angle : float
        Direction of the line in degrees, counter-clockwise from the +x axis
        (rows grow downwards, so 90 points up).
    decay : float
        The sample at distance ``t`` has weight proportional to ``decay ** t``
        (``1`` is a uniform line). ``decay < 1`` models a motion that slows down
        and can give a stable inverse; a uniform line's inverse does not decay,
        so ``exact`` refuses it.

    Returns
    -------
    numpy.ndarray
        An odd-sized PSF summing to one, its line starting at the centre.
    """
    if not (math.isfinite(length) and length >= 1):
        raise CliError(f"--motion LENGTH must be a number >= 1, got {length}")
    if not math.isfinite(angle):
        raise CliError(f"--motion ANGLE must be a finite number of degrees, got {angle}")
    if not (math.isfinite(decay) and 0 < decay <= 1):
        raise CliError(f"--decay must be in (0, 1], got {decay}")
    theta = math.radians(angle)
    # Rounded so that multiples of 90 degrees give exact axis-aligned lines.
    down, right = round(-math.sin(theta), 12), round(math.cos(theta), 12)
    t = np.linspace(0.0, length - 1, int(math.ceil((length - 1) * _MOTION_SAMPLES)) + 1)
    rows, cols = t * down, t * right
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    fr, fc = rows - r0, cols - c0
    radius = int(math.ceil(length)) + 1
    psf = np.zeros((2 * radius + 1, 2 * radius + 1))
    for dr, wr in ((0, 1 - fr), (1, fr)):
        for dc, wc in ((0, 1 - fc), (1, fc)):
            np.add.at(psf, (r0 + dr + radius, c0 + dc + radius), decay**t * wr * wc)
    return crop_to_support(psf / psf.sum())


def gaussian_psf(sigma: float) -> np.ndarray:
    """An isotropic Gaussian PSF of standard deviation ``sigma`` pixels, cut at 3 sigma, summing to one."""
    if not (math.isfinite(sigma) and sigma > 0):
        raise CliError(f"--gaussian SIGMA must be a positive number, got {sigma}")
    radius = max(1, math.ceil(3 * sigma))
    r = np.arange(-radius, radius + 1)
    g = np.exp(-0.5 * (r / sigma) ** 2)
    psf = np.outer(g, g)
    return psf / psf.sum()


def crop_to_support(psf: np.ndarray) -> np.ndarray:
    """The smallest centred, odd-sized window of ``psf`` that holds all its nonzero entries."""
    ch, cw = psf.shape[0] // 2, psf.shape[1] // 2
    rows, cols = np.nonzero(psf)
    dr = int(np.abs(rows - ch).max(initial=0))
    dc = int(np.abs(cols - cw).max(initial=0))
    return psf[ch - dr : ch + dr + 1, cw - dc : cw + dc + 1]


def quadrant_slices(shape: tuple[int, int], orientation: str) -> tuple[slice, slice]:
    """The rows and columns of an odd-sized PSF of ``shape`` that ``orientation``'s causal convolution reads.

    Each quadrant includes the centre row and column.
    """
    ch, cw = shape[0] // 2, shape[1] // 2
    rows, cols = _QUADRANT[orientation]
    return (
        slice(ch, None) if rows == "high" else slice(0, ch + 1),
        slice(cw, None) if cols == "high" else slice(0, cw + 1),
    )


def quadrants_of(psf: np.ndarray) -> list[str]:
    """The orientations whose quadrant (around the PSF's centre) holds the PSF's whole support."""
    support = psf != 0
    found = []
    for orientation in ic.ORIENTATIONS:
        outside = support.copy()
        outside[quadrant_slices(psf.shape, orientation)] = False
        if not outside.any():
            found.append(orientation)
    return found


def causal_kernel(psf: np.ndarray, orientation: str) -> CausalKernel:
    """The causal convolution equal to blurring with ``psf``, whose support must lie in ``orientation``'s quadrant.

    Raises
    ------
    ValueError
        If ``psf`` has nonzero entries outside that quadrant.
    """
    psf = crop_to_support(psf)
    if orientation not in quadrants_of(psf):
        raise ValueError(f"the PSF's support is not inside the {orientation} quadrant around its centre")
    quadrant = psf[quadrant_slices(psf.shape, orientation)]
    return CausalKernel(quadrant[::-1, ::-1].copy(), orientation)


def psf_of(kernel: CausalKernel) -> np.ndarray:
    """The PSF that blurs like ``kernel`` (odd-sized, centred, zero outside the quadrant).

    The inverse of :func:`causal_kernel`.
    """
    kh, kw = kernel.weight.shape
    psf = np.zeros((2 * kh - 1, 2 * kw - 1))
    psf[quadrant_slices(psf.shape, kernel.orientation)] = kernel.weight[::-1, ::-1]
    return psf


def split_psf(psf: np.ndarray) -> list[CausalKernel]:
    """Write any PSF as a sum of causal convolutions, one per nonempty quadrant.

    Every PSF entry goes to exactly one part (the centre row and column to the
    "high" side), so blurring with ``psf`` equals the sum of ``conv`` over the parts.
    """
    psf = crop_to_support(psf)
    ch, cw = psf.shape[0] // 2, psf.shape[1] // 2
    r = np.arange(psf.shape[0])[:, None]
    c = np.arange(psf.shape[1])[None, :]
    owner = {
        "TL": (r >= ch) & (c >= cw),
        "TR": (r >= ch) & (c < cw),
        "BL": (r < ch) & (c >= cw),
        "BR": (r < ch) & (c < cw),
    }
    parts = []
    for orientation in ic.ORIENTATIONS:
        part = np.where(owner[orientation], psf, 0.0)
        if part.any():
            quadrant = part[quadrant_slices(psf.shape, orientation)]
            parts.append(CausalKernel(quadrant[::-1, ::-1].copy(), orientation))
    return parts


class NotSafeForExact(CliError):
    """The ``exact`` method cannot be used with this PSF; ``reason`` says why (without the hint)."""

    def __init__(self, reason: str):
        super().__init__(f"{reason}; use --method tikhonov")
        self.reason = reason


def exact_kernel(psf: np.ndarray, orientation: str = "auto") -> CausalKernel:
    """The causal kernel for the ``exact`` method, or a refusal that points to ``tikhonov``.

    Whether its inverse is stable depends on the image's size: see :mod:`stability`.

    Parameters
    ----------
    psf : numpy.ndarray
        A validated PSF.
    orientation : {"auto", "TL", "TR", "BL", "BR"}
        ``"auto"`` picks the first orientation whose quadrant holds the PSF's
        support (when several do, as for a straight line along an axis, they
        are the same convolution).

    Raises
    ------
    NotSafeForExact
        If the support is not in one quadrant (or not in the requested one) or
        the centre tap is zero.
    """
    psf = crop_to_support(psf)
    quadrants = quadrants_of(psf)
    if not quadrants:
        raise NotSafeForExact("the PSF's support is not inside one quadrant around its centre, so it is not causal")
    if orientation != "auto" and orientation not in quadrants:
        raise NotSafeForExact(
            f"the PSF's support is not inside the {orientation} quadrant around its centre "
            f"(it fits {', '.join(quadrants)})"
        )
    if psf[psf.shape[0] // 2, psf.shape[1] // 2] == 0:
        raise NotSafeForExact("the PSF's centre entry is zero, so its causal convolution is not invertible")
    return causal_kernel(psf, quadrants[0] if orientation == "auto" else orientation)
