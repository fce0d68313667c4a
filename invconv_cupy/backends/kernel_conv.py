"""The convolution primitives on kernels (``kernels/conv.cu``), for any kernel device.

``conv`` is one launch: ``conv_apply_tiled`` (a block per pixel tile, the tile
with its halo and all weights staged in shared memory, a thread per pixel
computing all output channels), or ``conv_apply`` (a thread per output element)
when the weights do not fit in shared memory. Global loads, an ESTIMATE (not a
measurement) for B=100, C=12, 32x32, 3x3, float32: ``conv_apply`` issues
1,228,800 outputs x 108 taps x 2 loads (x and weight) x 4 B, about 106 MB of load
requests (mostly L1/L2 hits); ``conv_apply_tiled`` (16x16 tiles, 400 blocks) loads
400 x (12 x 18 x 18 + 1296) x 4 B, about 8.3 MB, and writes y (4.9 MB) in both. ``weight_grad`` is two
launches, a deterministic two-stage reduction (no float atomics, so the result
is bitwise reproducible run to run):

1. ``conv_weight_grad_partial``: each block takes pixel tiles (one image, a
   ``tile_h x tile_w`` tile in the orientation's frame; several tiles per block in
   a fixed order when there are more tiles than blocks), stages ``g`` (its output
   channels) and ``x`` plus its halo (all channels, ``KH-1`` rows and ``KW-1``
   columns towards the corner, zero outside the image) in shared memory, and each
   thread accumulates :data:`PARAMS_PER_THREAD` parameters over the tile's pixels
   in a fixed order. ``partial[block, param]`` holds the block's sums. When the
   ``C*C*KH*KW`` parameters need more threads than a block has, ``blockIdx.y``
   splits them into groups of output channels' parameters.
2. ``conv_weight_grad_finish``: per parameter, a fixed-order sum over the
   stage-1 blocks (lanes of a block, then a tree over the lanes), times
   ``scale``, masked anchor entries zero.

Global-memory traffic, an ESTIMATE from the access pattern (not a measurement),
for the headline training shape B=100, C=12, 32x32, 3x3, float32 (g and x are
4.9 MB each). The previous kernel (one block per parameter and chunk) read g
and x once per parameter: 1296 parameters x 102,400 pixels x 2 loads x 4 B,
about 1.06 GB of load requests (L1/L2 absorb some; DRAM traffic is lower).
The tiled kernel (:func:`weight_grad_plan`: 16x16 tiles, 400 blocks of 352
threads (324 busy), one group, 27,840 bytes of shared memory) reads each tile's g
(12 x 256 values) and x with its halo (12 x 18 x 18) once: 400 x 12 x 580 x 4 B,
about 11.1 MB; it writes 400 x 1296 partial sums (2.1 MB) that stage 2 reads
back, about 15 MB in all, roughly 70x less.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernel_launch import INT32_MAX, contiguous, dtype_name, index_scalar, index_type, launch

FAMILY = "conv"
BLOCK = 256            # threads per block of the elementwise launches
MAX_GRID = 2**16       # grid-stride loops cover the rest

#: parameters one thread of the weight gradient's stage 1 accumulates (``IC_WG_PER_THREAD`` in conv.cu)
PARAMS_PER_THREAD = 4
#: weight-gradient stage 1: most threads per block, largest tile (rows, columns)
WG_MAX_THREADS = 512
WG_MAX_TILE = (16, 32)
#: weight-gradient stage 1: at most this many blocks (parameter groups x tile blocks) ...
TARGET_BLOCKS = 1024
#: ... and at most this many partial sums (blocks x parameters), so the buffer stays bounded
MAX_PARTIAL = 2**22
#: weight-gradient stage 2: parameters per block and the lanes (a power of two) that split the sum over blocks
FINISH_PARAMS = 32
FINISH_LANES = 8


def _cdiv(a, b):
    return -(-a // b)


def _elementwise(n):
    """(grid, block) of a grid-stride launch over ``n`` elements."""
    block = min(BLOCK, 32 * _cdiv(n, 32))
    return min(_cdiv(n, block), MAX_GRID), block


#: conv_apply_tiled: largest tile (rows, columns); a thread per pixel of the tile
CONV_MAX_TILE = (16, 16)


def _fit_tile(shared, max_tile, H, W, shared_default, shared_limit):
    """The largest tile up to ``max_tile`` (halving its longer side) whose ``shared(th, tw)``
    bytes fit ``shared_default``, or ``shared_limit`` when not even a 1x1 tile fits the default."""
    budget = shared_default if shared(1, 1) <= shared_default else shared_limit
    th, tw = min(max_tile[0], H), min(max_tile[1], W)
    while shared(th, tw) > budget and (th > 1 or tw > 1):
        if tw >= th:
            tw = _cdiv(tw, 2)
        else:
            th = _cdiv(th, 2)
    return th, tw


def conv_tile(shape, kernel_size, itemsize, *, shared_default, shared_limit, tile=None):
    """``(tile_h, tile_w, shared_bytes)`` of ``conv_apply_tiled``, or None when not even a
    1x1 tile with all the weights fits in ``shared_limit`` (then ``conv_apply`` runs).

    The largest tile up to :data:`CONV_MAX_TILE` (halving its longer side) that fits
    ``shared_default`` bytes, else the opt-in ``shared_limit``; ``tile`` forces one (tests).
    """
    _, C, H, W = (int(n) for n in shape)
    KH, KW = (int(n) for n in kernel_size)

    def shared(th, tw):
        return (C * C * KH * KW + C * (th + KH - 1) * (tw + KW - 1)) * itemsize

    if tile is not None:
        th, tw = min(int(tile[0]), H), min(int(tile[1]), W)
        return th, tw, shared(th, tw)
    if shared(1, 1) > shared_limit:
        return None
    th, tw = _fit_tile(shared, CONV_MAX_TILE, H, W, shared_default, shared_limit)
    return th, tw, shared(th, tw)


def conv(device, x, w, orient, transpose=False, *, tile=None, tiled=True):
    """``T x`` (or ``T^T x`` when ``transpose``) for the causal convolution ``T``.

    ``conv_apply_tiled`` (a block per pixel tile, the tile with its halo and the weights
    in shared memory) when the weights fit; else ``conv_apply`` (a thread per output
    element, reads from global memory). ``tile`` forces a tile, ``tiled=False`` the
    untiled kernel (tests).
    """
    x, w = contiguous(device, x), contiguous(device, w)
    B, C, H, W = x.shape
    KH, KW = w.shape[2:]
    y = device.empty(x.shape, x.dtype)
    flags = (np.int32(orient.flip_h), np.int32(orient.flip_w), np.int32(transpose))
    how = conv_tile(x.shape, (KH, KW), x.itemsize, shared_default=device.max_shared_memory_per_block,
                    shared_limit=device.max_shared_memory_per_block_optin, tile=tile) if tiled else None
    if how is not None:
        th, tw, shared_bytes = how
        tiles_h, tiles_w = _cdiv(H, th), _cdiv(W, tw)
        index = index_type(device, x.size, w.size, B * tiles_h * tiles_w)
        i = lambda v: index_scalar(index, v)  # noqa: E731
        threads = min(BLOCK, 32 * _cdiv(th * tw, 32), device.max_threads_per_block)
        launch(device, FAMILY, "conv_apply_tiled", dtype_name(x), index, (B * tiles_h * tiles_w,), (threads,),
               (x, w, y, i(B), i(C), i(H), i(W), np.int32(KH), np.int32(KW), *flags,
                np.int32(th), np.int32(tw), i(tiles_h), i(tiles_w)),
               shared_mem=shared_bytes)
        return y
    grid, block = _elementwise(x.size)
    index = index_type(device, x.size + grid * block, w.size)
    i = lambda v: index_scalar(index, v)  # noqa: E731
    launch(device, FAMILY, "conv_apply", dtype_name(x), index, (grid,), (block,),
           (x, w, y, i(B), i(C), i(H), i(W), np.int32(KH), np.int32(KW), *flags))
    return y


@dataclass(frozen=True)
class WeightGradPlan:
    """How the weight gradient runs (see the module docstring)."""

    tile_h: int
    tile_w: int
    tiles_h: int
    tiles_w: int
    threads: int        # stage 1 block size
    groups: int         # parameter groups (blockIdx.y)
    row_slots: int      # thread slots per output channel: ceil(C*KH*KW / PARAMS_PER_THREAD)
    g_channels: int     # output channels of g a block stages (the most any group needs)
    blocks: int         # stage 1 blocks along x (each takes tiles blocks apart)
    shared_bytes: int   # stage 1 dynamic shared memory
    finish_params: int  # stage 2 parameters per block
    finish_lanes: int   # stage 2 lanes per parameter

    @property
    def items(self) -> int:
        """Pixel tiles per image."""
        return self.tiles_h * self.tiles_w


def weight_grad_plan(shape, kernel_size, itemsize, *, shared_default, shared_limit, max_threads=WG_MAX_THREADS,
                     tile=None, target_blocks=TARGET_BLOCKS, max_partial=MAX_PARTIAL) -> WeightGradPlan:
    """The tiling of the weight gradient of images ``shape`` (B, C, H, W) and a ``kernel_size`` kernel.

    The tile is the largest one up to :data:`WG_MAX_TILE` (halving its longer side)
    whose staging fits ``shared_default`` bytes (the limit without opt-in, so several
    blocks share a multiprocessor), else fits ``shared_limit`` (the opt-in limit; the
    launch raises the function's limit). ``tile`` (rows, columns) forces a tile (tests:
    many tiles, tiles smaller than the halo); ``max_threads`` forces parameter groups;
    ``target_blocks`` and ``max_partial`` bound the blocks and the partial buffer.
    """
    B, C, H, W = (int(n) for n in shape)
    KH, KW = (int(n) for n in kernel_size)
    L = C * KH * KW
    row_slots = _cdiv(L, PARAMS_PER_THREAD)
    slots = C * row_slots
    groups = _cdiv(slots, max_threads)
    per_group = _cdiv(slots, groups)        # balanced groups, in whole warps where the limit allows
    threads = min(max_threads, 32 * _cdiv(per_group, 32))
    groups = _cdiv(slots, threads)
    g_channels = max(min(C - 1, ((y + 1) * threads - 1) // row_slots) - (y * threads) // row_slots + 1
                     for y in range(groups))

    def shared(th, tw):
        return (g_channels * th * tw + C * (th + KH - 1) * (tw + KW - 1)) * itemsize

    if tile is not None:
        th, tw = min(int(tile[0]), H), min(int(tile[1]), W)
    else:
        th, tw = _fit_tile(shared, WG_MAX_TILE, H, W, shared_default, shared_limit)
        if shared(th, tw) > shared_limit:
            raise ValueError(
                f"weight gradient of {C} channels with a {KH}x{KW} kernel needs {shared(1, 1)} bytes of shared "
                f"memory per block even for a 1x1 tile; this device allows {shared_limit}. Use backend='numpy'."
            )
    tiles_h, tiles_w = _cdiv(H, th), _cdiv(W, tw)
    params = C * L
    blocks = max(1, min(B * tiles_h * tiles_w, target_blocks // groups, max_partial // params))
    if groups > 65535 or params > INT32_MAX:
        raise ValueError(f"weight gradient of {params} parameters is too large for one launch")
    lanes, finish_params = 1, min(FINISH_PARAMS, 32 * _cdiv(params, 32))
    while lanes < min(FINISH_LANES, blocks):
        lanes *= 2
    while finish_params * lanes * itemsize > shared_default and lanes > 1:   # tiny limits (tests)
        lanes //= 2
    while finish_params * lanes * itemsize > shared_default and finish_params > 1:
        finish_params //= 2
    return WeightGradPlan(th, tw, tiles_h, tiles_w, threads, groups, row_slots, g_channels, blocks,
                          shared(th, tw), finish_params, lanes)


def weight_grad(device, g, x, kernel_size, orient, scale=1.0, *, tile=None, max_threads=None,
                target_blocks=TARGET_BLOCKS):
    """``scale`` times the weight gradient of ``<g, T x>``; masked anchor entries zero.

    ``tile``, ``max_threads`` and ``target_blocks`` override :func:`weight_grad_plan`'s
    choices (tests: many tiles per block, parameter groups).
    """
    g, x = contiguous(device, g), contiguous(device, x)
    B, C, H, W = x.shape
    KH, KW = kernel_size
    dtype = dtype_name(x)
    how = weight_grad_plan(x.shape, kernel_size, x.itemsize,
                           shared_default=device.max_shared_memory_per_block,
                           shared_limit=device.max_shared_memory_per_block_optin,
                           max_threads=min(max_threads or WG_MAX_THREADS, device.max_threads_per_block), tile=tile,
                           target_blocks=target_blocks)
    params = C * C * KH * KW
    index = index_type(device, x.size, how.blocks * params, B * how.items + how.blocks,
                       params + FINISH_PARAMS)
    i = lambda v: index_scalar(index, v)  # noqa: E731
    flips = (np.int32(orient.flip_h), np.int32(orient.flip_w))
    partial = device.empty((how.blocks * params,), x.dtype)
    launch(device, FAMILY, "conv_weight_grad_partial", dtype, index, (how.blocks, how.groups), (how.threads,),
           (g, x, partial, i(B), i(C), i(H), i(W), np.int32(KH), np.int32(KW), *flips,
            np.int32(how.tile_h), np.int32(how.tile_w), i(how.tiles_h), i(how.tiles_w),
            np.int32(how.g_channels), np.int32(how.row_slots)),
           shared_mem=how.shared_bytes)
    grad_w = device.empty((C, C, KH, KW), x.dtype)
    finish_params = how.finish_params
    launch(device, FAMILY, "conv_weight_grad_finish", dtype, index, (_cdiv(params, finish_params),),
           (finish_params, how.finish_lanes),
           (partial, grad_w, i(params), i(how.blocks), i(C), np.int32(KH), np.int32(KW), *flips,
            x.dtype.type(scale)),
           shared_mem=finish_params * how.finish_lanes * x.itemsize)
    return grad_w
