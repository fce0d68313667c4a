"""From discrete pixel values to a continuous density and back: dequantization and bits per dimension.

Data with ``levels`` values per dimension (``0 .. levels - 1``: 256 for 8-bit
images, 17 for scikit-learn's digits) is mapped into ``[0, 1)`` with uniform
noise, ``u = (x + U[0, 1)) / levels``. A density ``p`` on ``[0, 1)^D`` then gives
the discrete model ``P(x) = integral of p over x's bin`` of volume
``levels**-D``, and by Jensen ``log P(x) >= E_U[log p(u)] - D log(levels)``:
the bits per dimension reported are this bound's, ``(-log p(u) / D + log
levels) / log 2``, an upper bound on the discrete model's code length.
"""

from __future__ import annotations

import math
from numbers import Integral

import torch
from torch import Tensor

__all__ = ["dequantize", "quantize", "bits_per_dim"]


def _check_levels(levels) -> int:
    if isinstance(levels, bool) or not isinstance(levels, Integral) or levels < 2:
        raise ValueError(f"levels must be an int of at least 2, got {levels!r}")
    return int(levels)


def dequantize(x: Tensor, levels: int, generator: torch.Generator | None = None, dtype=torch.float32) -> Tensor:
    """``(x + U[0, 1)) / levels``: integer data as points in ``[0, 1)``, uniform within each value's bin.

    Every point lies inside its own bin as ``quantize`` sees it, and below 1:
    ``quantize(dequantize(x, levels), levels) == x``.

    Parameters
    ----------
    x : Tensor of an integer dtype
        Values in ``0 .. levels - 1`` (not checked here: the data loaders check).
    levels : int
    generator : torch.Generator, optional
        On ``x``'s device; for reproducible noise.
    dtype : torch.dtype
        Floating dtype of the result.
    """
    levels = _check_levels(levels)
    if x.is_floating_point() or x.is_complex():
        raise TypeError(f"x must hold integer pixel values, got dtype {x.dtype}")
    noise = torch.rand(x.shape, generator=generator, dtype=dtype, device=x.device)
    x = x.to(dtype)
    u = (x + noise) / levels
    # Rounding can put ``x + noise`` (noise just below 1) or the division on the
    # next bin's edge; step such points back inside their own bin, one ulp at a
    # time, so that ``quantize(dequantize(x)) == x`` always holds.
    for _ in range(8):
        bins = torch.floor(u * levels)  # unclamped: u == 1 is outside the top bin
        if bool((bins == x).all()):
            return u
        u = torch.where(bins > x, torch.nextafter(u, torch.zeros_like(u)),
                        torch.where(bins < x, torch.nextafter(u, torch.ones_like(u)), u))
    raise AssertionError("dequantize could not place every point inside its bin")


def quantize(u: Tensor, levels: int) -> Tensor:
    """The bin of each value of ``u``: ``floor(u * levels)`` clipped to ``0 .. levels - 1`` (NaN to 0), as int64."""
    levels = _check_levels(levels)
    bins = torch.nan_to_num(torch.floor(u * levels), nan=0.0)
    return bins.clamp(0, levels - 1).to(torch.int64)


def bits_per_dim(log_prob: Tensor, dims: int, levels: int) -> Tensor:
    """Bits per dimension of discrete data from the log-density of its dequantized points.

    Parameters
    ----------
    log_prob : Tensor
        ``log p(u)`` in nats for each dequantized point ``u`` in ``[0, 1)^dims``.
    dims : int
        ``D``, the number of dimensions of one point (``C * H * W``).
    levels : int
        Values per dimension of the discrete data.

    Returns
    -------
    Tensor
        ``(-log_prob / D + log(levels)) / log(2)``, elementwise.
    """
    levels = _check_levels(levels)
    if isinstance(dims, bool) or not isinstance(dims, Integral) or dims < 1:
        raise ValueError(f"dims must be a positive int, got {dims!r}")
    return (-log_prob / dims + math.log(levels)) / math.log(2)
