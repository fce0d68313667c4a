"""Whether a causal blur's exact inverse is stable on an image, and how much it amplifies noise.

The exact inverse is ``invconv_cupy.solve``; its impulse response (the solve of a
unit impulse at the orientation's corner) says everything about it: where it has
fallen below float precision relative to its peak, nothing a pixel does can reach
farther, so an inverse that has fallen that far *within the image* behaves like a
decaying one there (stable); one that has not (a uniform motion line, whose
z-transform has zeros on the unit torus) carries every error across the whole
picture, and one that grows overflows. The response's energy is the noise gain:
white noise of standard deviation ``sigma`` comes out of the exact inverse with
standard deviation ``sigma * sqrt(gain)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

import invconv_cupy as ic

from .psf import CausalKernel, NotSafeForExact

#: Stable: the impulse response has fallen below this fraction of its peak within
#: the image (float32's machine epsilon: beyond that it changes no float32 value).
DECAY_TOLERANCE = float(np.finfo(np.float32).eps)
#: The response is computed on at most this many pixels per side (plus the kernel's
#: extent); larger images are judged at this distance, where a decaying response is
#: smaller than anywhere farther.
MAX_EXTENT = 1024
#: A response still above this fraction of its peak at the judged distance is called "does not decay".
_NOT_DECAYING = 0.1


@dataclass(frozen=True)
class InverseResponse:
    """The impulse response of a causal kernel's exact inverse.

    Attributes
    ----------
    kernel : CausalKernel
    response : numpy.ndarray, shape (n, n)
        ``solve`` of a unit impulse, in the ``"TL"`` frame (impulse at ``[0, 0]``);
        may hold inf/NaN where the inverse overflows.
    """

    kernel: CausalKernel
    response: np.ndarray

    @property
    def extent(self) -> int:
        """The number of pixels per side the response was computed on."""
        return self.response.shape[0]

    @cached_property
    def _at_distance(self) -> np.ndarray:
        """``at[d]``: the largest ``|response|`` at Chebyshev distance ``d`` from the impulse (inf where it overflows)."""
        magnitude = np.abs(self.response)
        magnitude[~np.isfinite(magnitude)] = np.inf
        # Chebyshev distance d is row d up to column d and column d up to row d.
        diagonal = np.arange(self.extent)
        in_row = np.maximum.accumulate(magnitude, axis=1)[diagonal, diagonal]
        in_column = np.maximum.accumulate(magnitude, axis=0)[diagonal, diagonal]
        return np.maximum(in_row, in_column)

    def peak_at(self, distance: int) -> float:
        """The largest ``|response|`` at ``distance`` pixels or more (clipped to the computed extent)."""
        return float(self._at_distance[min(distance, self.extent - 1) :].max())

    def grows(self, distance: int) -> bool:
        """Whether the response at ``distance`` pixels or more exceeds by half its largest value nearer than ``distance / 2``."""
        near = self._at_distance[: max(1, min(distance, self.extent) // 2)].max()
        return self.peak_at(distance) > 1.5 * float(near)

    def decay(self, distance: int) -> float:
        """The largest ``|response|`` at ``distance`` pixels or more, relative to the peak (inf if it overflows).

        ``distance`` is clipped to the computed extent.
        """
        peak = self.peak_at(0)
        return self.peak_at(distance) / peak if math.isfinite(peak) and peak > 0 else math.inf

    def settled_distance(self, tolerance: float = DECAY_TOLERANCE) -> int | None:
        """The smallest distance beyond which the response stays below ``tolerance`` of its peak (None: never)."""
        at = self._at_distance
        peak = at.max()
        if not math.isfinite(peak):
            return None
        above = np.nonzero(at > tolerance * peak)[0]
        settled = int(above[-1]) + 1 if above.size else 0
        return settled if settled < self.extent else None

    def noise_gain(self, shape: tuple[int, int]) -> float:
        """The energy of the response within an image of ``shape``: the noise variance gain of the exact inverse.

        (For the pixel farthest from the orientation's corner; pixels nearer to it
        gain less.)
        """
        h, w = shape
        part = self.response[:h, :w]
        with np.errstate(over="ignore", invalid="ignore"):
            gain = float(np.sum(part * part))
        return gain if math.isfinite(gain) else math.inf


def inverse_response(kernel: CausalKernel, extent: int) -> InverseResponse:
    """Solve ``kernel`` for a unit impulse on a square grid of ``extent`` pixels per side (in the ``"TL"`` frame).

    Parameters
    ----------
    kernel : CausalKernel
    extent : int
        Pixels per side, at least 1.

    Returns
    -------
    InverseResponse
    """
    flip_h, flip_w = kernel.orientation[0] == "B", kernel.orientation[1] == "R"
    tl_weight = np.ascontiguousarray(kernel.weight[:: -1 if flip_h else 1, :: -1 if flip_w else 1])
    impulse = np.zeros((1, 1, extent, extent))
    impulse[0, 0, 0, 0] = 1.0
    with np.errstate(over="ignore", invalid="ignore"):
        response = ic.solve(impulse, tl_weight[None, None], "TL")[0, 0]
    return InverseResponse(kernel, response)


def response_for(kernel: CausalKernel, shape: tuple[int, int]) -> InverseResponse:
    """The impulse response on a grid that covers an image of ``shape`` (up to :data:`MAX_EXTENT`) and a kernel beyond."""
    return inverse_response(kernel, min(max(shape), MAX_EXTENT) + max(kernel.weight.shape))


def judged_distance(shape: tuple[int, int]) -> int:
    """The distance at which stability is judged for an image of ``shape``: its larger side less one, at most ``MAX_EXTENT - 1``."""
    return min(max(shape), MAX_EXTENT) - 1


def check_stable(response: InverseResponse, shape: tuple[int, int]) -> None:
    """Raise :class:`NotSafeForExact` unless the inverse has decayed below :data:`DECAY_TOLERANCE` within ``shape``.

    The message holds the numbers: the size, the distance and the response there
    relative to its peak.
    """
    distance = judged_distance(shape)
    decay = response.decay(distance)
    if decay <= DECAY_TOLERANCE:
        return
    if math.isinf(decay):
        how = f"grows until it overflows within {response.extent} px"
    elif response.grows(distance):
        how = f"grows: at {distance} px it is {decay:.2g} of its peak, which lies that far or farther"
    else:
        how = "does not decay" if decay > _NOT_DECAYING else "decays too slowly"
        how += f": at {distance} px it is still {decay:.2g} of its peak"
    raise NotSafeForExact(
        f"the PSF's exact inverse is not stable on a {shape[0]} x {shape[1]} image (its impulse response {how}; "
        f"stable needs below {DECAY_TOLERANCE:.2g}, float32 precision, within the image)"
    )
