"""The CPU path: vectorized NumPy, no dense matrices, memory O(B*C*H*W).

Every primitive maps its orientation onto the ``"TL"`` frame with flipped
*views* (no copies), works there, and writes a C-contiguous result.

The solve is a wavefront over anti-diagonals on a *skewed* copy of the image:
``S[d, i, b, c] = x[b, c, i, d - i]`` (plus zero padding), so each anti-diagonal
is one contiguous ``(L, B, C)`` slab, and every tap of a step reads a shifted
slab of an earlier diagonal.  One strided view gathers all taps of a step, and
one matrix product applies them, so a step costs a handful of NumPy calls
whatever the kernel size; there are ``H + W - 1`` steps.
"""

from __future__ import annotations

import numpy as np

from ..orientation import Orientation

name = "numpy"
xp = np


def _to_tl(a, orient: Orientation):
    """View of ``a`` (..., H, W) in the TL frame of ``orient``."""
    if orient.flip_h:
        a = a[..., ::-1, :]
    if orient.flip_w:
        a = a[..., ::-1]
    return a


def _masked_tl_weight(w, orient: Orientation):
    """Copy of the weight in the TL frame with the anchor's upper triangle zeroed."""
    w = np.array(_to_tl(w, orient))
    w[:, :, -1, -1] = np.tril(w[:, :, -1, -1])
    return w


def _conv_tl(x, w):
    """TL causal convolution of ``x`` (B, C, H, W) with a masked TL weight; returns (C, B, H, W)."""
    _, _, H, W = x.shape
    KH, KW = w.shape[2:]
    y = np.zeros((w.shape[0], x.shape[0], H, W), dtype=x.dtype)
    for p in range(min(KH, H)):
        for q in range(min(KW, W)):
            y[:, :, p:, q:] += np.tensordot(w[:, :, KH - 1 - p, KW - 1 - q], x[:, :, : H - p, : W - q], axes=(1, 1))
    return y


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
    return np.ascontiguousarray(_to_tl(y, orient).swapaxes(0, 1))


def weight_grad(g, x, kernel_size, orient: Orientation, scale: float = 1.0):
    """``scale`` times the weight gradient of ``<g, T x>``, with the masked anchor entries zero."""
    KH, KW = kernel_size
    g = _to_tl(g, orient)
    x = _to_tl(x, orient)
    _, C, H, W = x.shape
    gw = np.zeros((C, C, KH, KW), dtype=x.dtype)
    for p in range(min(KH, H)):
        for q in range(min(KW, W)):
            gw[:, :, KH - 1 - p, KW - 1 - q] = np.tensordot(
                g[:, :, p:, q:], x[:, :, : H - p, : W - q], axes=([0, 2, 3], [0, 2, 3])
            )
    gw[:, :, -1, -1] = np.tril(gw[:, :, -1, -1])
    if scale != 1.0:
        gw *= scale
    return np.ascontiguousarray(_to_tl(gw, orient))


def _wavefront_tl(y, w, anchor_inverse):
    """Solve ``M x = y`` in the TL frame, where ``M`` has the off-anchor taps of
    ``w`` (C, C, KH, KW) and the anchor matrix ``inv(anchor_inverse)``.

    The solution lives in a skewed store of 2-D shape (rows, R*B): channel ``c``
    of pixel ``(i, j)``, batch ``b``, is at row ``C*(i+j+DP) + C-1-c``, column
    ``(i+PH-1)*B + b``. In that layout the taps ``(p, q)`` of one ``p`` read
    ``PW*C`` consecutive rows of one column range, an ordinary strided matrix,
    so a step is one batched matrix product on a view, with no gather copies. The
    rows of the current diagonal start out holding ``y``; the anchor block of
    the weights is ``anchor_inverse``. Returns a (H, W, B, C) view of ``x``.
    """
    B, C, H, W = y.shape
    KH, KW = w.shape[2:]
    PH, PW = min(KH, H), min(KW, W)  # taps further away only ever read zero padding
    w = w[:, :, KH - PH :, KW - PW :]
    DP = PH + PW - 2
    R = H + PH - 1
    dtype = y.dtype
    item = dtype.itemsize

    # blocks[p][C-1-o, (PW-1-q)*C + C-1-c] = -(A^-1 w_tap(p, q))[o, c]; the anchor block is A^-1.
    taps = -np.einsum("ok,kcpq->pqoc", anchor_inverse, w[:, :, ::-1, ::-1].astype(np.float64))
    taps[0, 0] = anchor_inverse
    blocks = np.ascontiguousarray(taps[:, ::-1, ::-1, ::-1].transpose(0, 2, 1, 3).reshape(PH, C, PW * C), dtype=dtype)

    store = np.zeros(((H + W - 1 + DP) * C, R * B), dtype=dtype)
    row = R * B
    pixels = np.ndarray((H, W, B, C), dtype, store, ((DP * C + C - 1) * row + (PH - 1) * B) * item,
                        ((C * row + B) * item, C * row * item, item, -row * item))
    pixels[...] = y.transpose(2, 3, 0, 1)
    # For step d, the taps of shift p read rows [C*(d+DP-p-PW+1), +PW*C) and columns
    # shifted by -p*B: one 3-D view over p, so a step is one batched matrix product.
    p_stride = -(C * row + B) * item
    products = np.empty((PH, C, min(H, W) * B), dtype=dtype)
    for d in range(H + W - 1):
        i0, i1 = max(0, d - W + 1), min(H - 1, d)
        n = (i1 - i0 + 1) * B
        col = (i0 + PH - 1) * B
        sources = np.ndarray((PH, PW * C, n), dtype, store, (C * (d + DP - PW + 1) * row + col) * item,
                             (p_stride, row * item, item))
        out = products[:, :, :n]
        np.matmul(blocks, sources, out=out)
        np.sum(out, axis=0, out=store[C * (d + DP) : C * (d + DP + 1), col : col + n])
    return pixels


def _lower_inverse(a):
    """Inverse of the lower-triangular ``a`` by substitution; a zero diagonal gives inf/nan, not an error
    (the API checks the diagonal unless told not to, as on the GPU)."""
    inverse = np.zeros_like(a)
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(a.shape[0]):
            inverse[i] = -(a[i, :i] @ inverse[:i])
            inverse[i, i] += 1.0
            inverse[i] /= a[i, i]
    return inverse


def solve(y, w, orient: Orientation, transpose: bool = False):
    """``T^-1 y`` (or ``T^-T y`` when ``transpose``)."""
    w = _masked_tl_weight(w, orient)
    a_inv = _lower_inverse(w[:, :, -1, -1].astype(np.float64))
    y = _to_tl(y, orient)
    if transpose:
        # T^-T solves from the opposite corner with channel-swapped taps.
        pixels = _wavefront_tl(y[..., ::-1, ::-1], w.swapaxes(0, 1), a_inv.T)[::-1, ::-1]
    else:
        pixels = _wavefront_tl(y, w, a_inv)
    return np.ascontiguousarray(_to_tl(pixels.transpose(2, 3, 0, 1), orient))
