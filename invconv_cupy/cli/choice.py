"""The default method: exact or tikhonov, whichever is predicted to leave the smaller error.

Both are computed (exact costs one solve, little beside CG) and their mean squared
errors against the unknown sharp picture are predicted from the data:

- **exact**: ``x_exact = x + T^-1 n``. White noise of standard deviation
  ``sigma`` (:func:`noise.estimate_noise`) comes out with variance
  ``sigma^2 * gain``, ``gain`` the energy of the inverse's impulse response
  (:meth:`stability.InverseResponse.noise_gain`).
- **tikhonov**: an unbiased estimate (Stein's, in the periodic approximation)
  that uses the exact solution as a noisy reference::

      E|x_tik - x|^2 = E|x_tik - x_exact|^2 - sigma^2 gain + 2 sigma^2 tau

  with ``tau = mean_f 1 / (|K|^2 + lam |D|^2)``, and never below tikhonov's own
  noise variance ``sigma^2 mean_f |K|^2 / (|K|^2 + lam |D|^2)^2``.

With the zero boundary model both methods assume the same outside, and the
difference ``x_tik - x_exact`` is measured on the whole frame. With the unknown
one, exact guesses the outside (a mirror image) where tikhonov leaves it free:
the difference is measured away from the band along the edges the exact inverse
reads from, where that guess, not the noise, makes most of its error, and the
band's excess difference is added to exact's predicted error (tikhonov's own
edge errors count there too, so the guess is a pessimistic one for exact).
Where the band covers most of the frame, exact's error cannot be predicted and
tikhonov is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .methods import causal_sides
from .noise import blur_symbol, gradient_symbol
from .stability import InverseResponse

#: The band along the edges the exact inverse reads from that the comparison leaves
#: out: where the impulse response is still above this fraction of its peak.
BOUNDARY_DECAY = 1e-3
#: Exact is not considered when leaving out that band would keep less than this share of the frame.
MIN_INTERIOR_SHARE = 0.25


@dataclass(frozen=True)
class Choice:
    """The default method's choice and its reasons.

    Attributes
    ----------
    method : {"exact", "tikhonov"}
    exact_rms, tikhonov_rms : float
        The predicted root-mean-square errors.
    sigma : float
        The noise level used.
    gain : float
        The exact inverse's noise (variance) gain.
    """

    method: str
    exact_rms: float
    tikhonov_rms: float
    sigma: float
    gain: float
    edge_band: int | None = None

    def reason(self) -> str:
        """One line: the choice and why, in numbers."""
        if self.edge_band is not None:
            return (f"tikhonov: the exact inverse's edge effects reach {self.edge_band} px into the frame, too far "
                    "to predict its error")
        amplified = f"noise {self.sigma:.2g} amplified {math.sqrt(self.gain):.3g}x by the exact inverse"
        if self.method == "exact":
            return (f"exact: predicted rms error {self.exact_rms:.2g} ({amplified}) "
                    f"against tikhonov's {self.tikhonov_rms:.2g}")
        return f"tikhonov: predicted rms error {self.tikhonov_rms:.2g} against exact's {self.exact_rms:.2g} ({amplified})"


def _interior(shape: tuple[int, int], orientation: str, band: int) -> tuple[slice, slice] | None:
    """The frame less ``band`` pixels on the sides ``orientation`` reads from (None if that leaves too little)."""
    (top, bottom), (left, right) = causal_sides(orientation, band)
    h, w = shape
    if (h - top - bottom) * (w - left - right) < MIN_INTERIOR_SHARE * h * w:
        return None
    return slice(top, h - bottom), slice(left, w - right)


def choose(
    exact: np.ndarray,
    tikhonov: np.ndarray,
    psf: np.ndarray,
    lam: float,
    sigma: float,
    response: InverseResponse,
    boundary: str = "zero",
) -> Choice:
    """Pick the method with the smaller predicted error.

    Parameters
    ----------
    exact, tikhonov : numpy.ndarray, shape (B, H, W)
        The two results for one image.
    psf : numpy.ndarray
    lam : float
        Tikhonov's weight.
    sigma : float
        The noise level of the blurred image.
    response : InverseResponse
        The exact inverse's impulse response (a stable one).
    boundary : {"zero", "unknown"}
        The boundary model both results were computed with.

    Returns
    -------
    Choice
    """
    shape = exact.shape[-2:]
    gain = response.noise_gain(shape)
    blur = blur_symbol(psf, shape)
    normal = blur + lam * gradient_symbol(shape)
    with np.errstate(divide="ignore"):
        tau = float(np.mean(1.0 / normal))
        variance = sigma**2 * float(np.mean(blur / normal**2))
    squared = np.mean((tikhonov - exact) ** 2, axis=0)
    inside = np.ones(shape, bool)
    if boundary == "unknown":
        band = response.settled_distance(BOUNDARY_DECAY)
        band = max(shape) if band is None else band
        interior = _interior(shape, response.kernel.orientation, band)
        if interior is None:
            return Choice("tikhonov", math.nan, math.nan, sigma, gain, edge_band=band)
        inside[...] = False
        inside[interior] = True
    difference = float(squared[inside].mean())
    # What exact's boundary guess adds near the edges, beyond the difference the noise makes everywhere.
    edges = float(np.sum(np.maximum(squared[~inside] - difference, 0.0))) / squared.size
    exact_mse = sigma**2 * gain + edges
    tikhonov_mse = max(difference - sigma**2 * gain + 2 * sigma**2 * tau, variance)
    method = "exact" if exact_mse < tikhonov_mse else "tikhonov"
    return Choice(method, math.sqrt(exact_mse), math.sqrt(tikhonov_mse), sigma, gain)
