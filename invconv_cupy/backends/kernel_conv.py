"""The convolution primitives on kernels (``kernels/conv.cu``), for any kernel device.

``conv`` is one launch (a thread per output element); ``weight_grad`` is two:
per-block partial sums, then a fixed-order sum per parameter, so the result is
bitwise reproducible (no float atomics).
"""

from __future__ import annotations

import numpy as np

from .kernel_launch import contiguous, dtype_name, index_scalar, index_type, launch

FAMILY = "conv"
BLOCK = 256            # threads per block of the elementwise launches
MAX_GRID = 2**16       # grid-stride loops cover the rest
TARGET_BLOCKS = 4096   # weight-gradient stage 1: enough blocks to fill a GPU


def _cdiv(a, b):
    return -(-a // b)


def _elementwise(n):
    """(grid, block) of a grid-stride launch over ``n`` elements."""
    block = min(BLOCK, 32 * _cdiv(n, 32))
    return min(_cdiv(n, block), MAX_GRID), block


def conv(device, x, w, orient, transpose=False):
    """``T x`` (or ``T^T x`` when ``transpose``) for the causal convolution ``T``."""
    x, w = contiguous(device, x), contiguous(device, w)
    B, C, H, W = x.shape
    KH, KW = w.shape[2:]
    grid, block = _elementwise(x.size)
    index = index_type(device, x.size + grid * block, w.size)
    i = lambda v: index_scalar(index, v)  # noqa: E731
    y = device.empty(x.shape, x.dtype)
    launch(device, FAMILY, "conv_apply", dtype_name(x), index, (grid,), (block,),
           (x, w, y, i(B), i(C), i(H), i(W), np.int32(KH), np.int32(KW),
            np.int32(orient.flip_h), np.int32(orient.flip_w), np.int32(transpose)))
    return y


def weight_grad(device, g, x, kernel_size, orient, scale=1.0):
    """``scale`` times the weight gradient of ``<g, T x>``; masked anchor entries zero."""
    g, x = contiguous(device, g), contiguous(device, x)
    B, C, H, W = x.shape
    KH, KW = kernel_size
    dtype = dtype_name(x)
    n = B * H * W                      # reduction length per parameter
    params = C * C * KH * KW
    block = min(BLOCK, 1 << (n - 1).bit_length())   # a power of two for the tree
    chunks = max(1, min(_cdiv(n, block), _cdiv(TARGET_BLOCKS, params)))
    if params * chunks > 2**31 - 1:
        raise ValueError(f"weight gradient of {params} parameters is too large for one launch")
    finish_grid, finish_block = _elementwise(params)
    index = index_type(device, x.size, n + chunks * block, params * chunks,
                       params + finish_grid * finish_block)
    i = lambda v: index_scalar(index, v)  # noqa: E731
    partial = device.empty((params * chunks,), x.dtype)
    launch(device, FAMILY, "conv_weight_grad_partial", dtype, index, (params * chunks,), (block,),
           (g, x, partial, i(B), i(C), i(H), i(W), np.int32(KH), np.int32(KW),
            np.int32(orient.flip_h), np.int32(orient.flip_w), i(chunks)),
           shared_mem=block * x.itemsize)
    grad_w = device.empty((C, C, KH, KW), x.dtype)
    launch(device, FAMILY, "conv_weight_grad_finish", dtype, index, (finish_grid,), (finish_block,),
           (partial, grad_w, i(params), i(chunks), x.dtype.type(scale)))
    return grad_w
