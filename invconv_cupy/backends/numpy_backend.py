"""The CPU path: vectorized NumPy, no dense matrices, memory O(B*C*H*W).

Every primitive maps its orientation onto the ``"TL"`` frame with flipped
*views* (no copies), works there, and writes a C-contiguous result.

The convolution and its weight gradient work on zero-padded rows flattened so
that every tap is one contiguous slice: a tap costs one matrix product. Kernels
with many taps convolve by FFT instead (float64 inside).

The solve is a wavefront over anti-diagonals on a *skewed* copy of the image
(:mod:`.numpy_wavefront`): each channel of each anti-diagonal is one contiguous
row, so the taps of one step are strided views of earlier rows and a step is one
batched matrix product, whatever the kernel size; there are ``H + W - 1`` steps.
The transposed solve is the same wavefront from the opposite corner.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from ..orientation import Orientation
from . import numpy_wavefront

name = "numpy"
xp = np


def _to_tl(a, orient: Orientation):
    """View of ``a`` (..., H, W) in the TL frame of ``orient``."""
    if orient.flip_h:
        a = a[..., ::-1, :]
    if orient.flip_w:
        a = a[..., ::-1]
    return a


def _fresh(a):
    """A C-contiguous copy of ``a`` with the usual positive strides.

    Always a copy, unlike ``np.ascontiguousarray``, which returns ``a`` itself
    when numpy deems it contiguous: a view of kept memory, or one with negative
    strides on flipped axes of length 1 (which ``torch.from_numpy`` refuses).
    """
    return np.array(a, order="C")


def _masked_tl_weight(w, orient: Orientation):
    """Copy of the weight in the TL frame with the anchor's upper triangle zeroed."""
    w = np.array(_to_tl(w, orient))
    w[:, :, -1, -1] = np.tril(w[:, :, -1, -1])
    return w


def _padded_rows(x, kh, kw):
    """``x`` (B, C, H, W) zero-padded as TL needs, flattened: (B, C, (H+KH)*(W+KW-1)), and the row length.

    Output pixel ``(i, j)`` at flat position ``n = i*Wp + j`` reads tap ``(a, e)`` at
    ``n + a*Wp + e``, so each tap is one contiguous slice of length ``H*Wp`` (the
    ``KW-1`` extra columns per row are computed and dropped; one extra row at the
    bottom keeps the last tap's slice in bounds).
    """
    B, C, H, W = x.shape
    row = W + kw - 1
    padded = np.zeros((B, C, H + kh, row), dtype=x.dtype)
    padded[:, :, kh - 1 : kh - 1 + H, kw - 1 :] = x
    return padded.reshape(B, C, -1), row


def _taps(kh, kw, h, w):
    """The taps ``(a, e)`` whose slice can reach the image (the others only read padding)."""
    return [(a, e) for a in range(max(0, kh - h), kh) for e in range(max(0, kw - w), kw)]


#: kernels with at least this many taps reaching the image convolve by FFT
FFT_MIN_TAPS = 16


def _conv_tl(x, w):
    """TL causal convolution of ``x`` (B, C, H, W) with a masked TL weight: a (B, C, H, W) view."""
    B, C, H, W = x.shape
    KH, KW = w.shape[2:]
    taps = _taps(KH, KW, H, W)
    if len(taps) >= FFT_MIN_TAPS:
        return _conv_tl_fft(x, w)
    flat, row = _padded_rows(x, KH, KW)
    n = H * row
    y = np.zeros((B, C, n), dtype=x.dtype)
    for a, e in taps:
        offset = a * row + e
        y += np.matmul(w[:, :, a, e], flat[:, :, offset : offset + n])
    return y.reshape(B, C, H, row)[..., :W]


def _conv_tl_fft(x, w):
    """:func:`_conv_tl` for large kernels: a causal linear convolution by real FFTs in float64.

    The TL correlation with ``w`` is the convolution with ``w`` flipped; FFT sizes
    of at least ``H + KH - 1`` by ``W + KW - 1`` keep the wrap-around out of the image.
    """
    _, _, H, W = x.shape
    KH, KW = w.shape[2:]
    size = (scipy.fft.next_fast_len(H + KH - 1, real=True), scipy.fft.next_fast_len(W + KW - 1, real=True))
    image = scipy.fft.rfft2(x.astype(np.float64, copy=False), s=size)
    kernel = scipy.fft.rfft2(w[:, :, ::-1, ::-1].astype(np.float64), s=size)
    product = np.einsum("bcuv,ocuv->bouv", image, kernel)
    return scipy.fft.irfft2(product, s=size)[..., :H, :W].astype(x.dtype, copy=False)


def conv(x, w, orient: Orientation, transpose: bool = False):
    """``T x`` (or ``T^T x`` when ``transpose``) for the causal convolution ``T``."""
    w = _masked_tl_weight(w, orient)
    x = _to_tl(x, orient)
    if transpose:
        # T^T is the correlation towards the opposite corner with channel-swapped
        # taps: flipHW(conv_TL(flipHW(g), swap(w))).
        y = _conv_tl(x[..., ::-1, ::-1], w.swapaxes(0, 1))[..., ::-1, ::-1]
    else:
        y = _conv_tl(x, w)
    return _fresh(_to_tl(y, orient))


def weight_grad(g, x, kernel_size, orient: Orientation, scale: float = 1.0):
    """``scale`` times the weight gradient of ``<g, T x>``, with the masked anchor entries zero."""
    KH, KW = kernel_size
    g = _to_tl(g, orient)
    x = _to_tl(x, orient)
    B, C, H, W = x.shape
    flat, row = _padded_rows(x, KH, KW)
    g_rows = np.zeros((B, C, H, row), dtype=x.dtype)  # g on the padded rows, zero where y was dropped
    g_rows[..., :W] = g
    g_rows = g_rows.reshape(B, C, -1)
    n = H * row
    gw = np.zeros((C, C, KH, KW), dtype=x.dtype)
    for a, e in _taps(KH, KW, H, W):
        offset = a * row + e
        gw[:, :, a, e] = np.matmul(g_rows, flat[:, :, offset : offset + n].swapaxes(1, 2)).sum(axis=0)
    gw[:, :, -1, -1] = np.tril(gw[:, :, -1, -1])
    if scale != 1.0:
        gw *= scale
    return _fresh(_to_tl(gw, orient))


def solve(y, w, orient: Orientation, transpose: bool = False):
    """``T^-1 y`` (or ``T^-T y`` when ``transpose``)."""
    B, C, H, W = y.shape
    w = _to_tl(w, orient)
    reach = (min(w.shape[2], H), min(w.shape[3], W))  # taps further away only ever read zero padding
    y = _to_tl(y, orient)
    if transpose:
        # T^-T solves from the opposite corner with channel-swapped taps.
        y = y[..., ::-1, ::-1]
    plan = numpy_wavefront.wavefront(y.shape, reach, y.dtype)
    plan.load(y)
    plan.run(numpy_wavefront.tap_blocks(w, reach, y.dtype, transpose))
    x = plan.pixels.transpose(2, 3, 0, 1)
    if transpose:
        x = x[..., ::-1, ::-1]
    return _fresh(_to_tl(x, orient))  # a copy: the store is kept for the next solve
