"""The triangular solve on ``kernels/solve.cu``, shared by the kernel backends (``cupy``, ``emulate``).

:func:`solve` computes ``T^-1 y`` (or ``T^-T y``) on a kernel *device*: an
object with ``function(family, entry, dtype, index)``, ``empty(shape, dtype)``,
``xp``, ``index64`` and the limits ``max_threads_per_block`` and
``max_shared_memory_per_block_optin`` (see :mod:`invconv_cupy.backends.kernel_launch`).

Two paths, picked by :func:`plan` from the shared memory a block may use:

- **single launch**: one block per image holds the whole image (all channels,
  plus a zero halo of ``KH-1`` rows and ``KW-1`` columns) in shared memory and
  runs all ``H + W - 1`` anti-diagonals with one ``__syncthreads()`` each;
- **tiled**: square tiles of ``T x T`` pixels, one launch per *tile*
  anti-diagonal (``ceil(H/T) + ceil(W/T) - 1`` launches), each block solving one
  tile of one image the same way, its halo read from the already-solved tiles.

Each block derives its step matrices (``A^-1`` and ``-A^-1 W_tap``) from the
weight itself, in shared memory. When those matrices do not fit next to the
image (or a tile), one ``solve_prepare`` launch writes them to global memory
first and the steps read them from there. Everything is queued on the current
stream; nothing is read back to the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..orientation import Orientation

#: ``IC_SOLVE_OUTPUTS`` in ``kernels/solve.cu``: output channels per thread in a step
OUTPUTS_PER_THREAD = 2
#: the largest tile side the tiled path uses (more tiles per anti-diagonal keep more SMs busy)
MAX_TILE = 64
#: most threads per block (a step has at most ``min(H, W) * ceil(C / 2)`` work items)
MAX_THREADS = 512
_FAMILY = "solve"
_INDEX32_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class Plan:
    """How a solve runs: tile size, block size, dynamic shared memory, where the step matrices live."""

    tile_h: int
    tile_w: int
    threads: int
    shared_bytes: int
    matrices_in_global: bool
    tiles_h: int
    tiles_w: int

    @property
    def single_launch(self) -> bool:
        """One tile covers the image: the whole solve is one launch (two with global matrices)."""
        return self.tiles_h == 1 and self.tiles_w == 1

    @property
    def launches(self) -> int:
        return self.tiles_h + self.tiles_w - 1 + int(self.matrices_in_global)


def _padded_channels(C):
    return -(-C // OUTPUTS_PER_THREAD) * OUTPUTS_PER_THREAD


def _effective_kernel(shape, kernel_size):
    _, _, H, W = shape
    KH, KW = kernel_size
    return min(KH, H), min(KW, W)


def plan(shape, kernel_size, itemsize, *, shared_limit, max_threads=MAX_THREADS, max_tile=MAX_TILE) -> Plan:
    """Pick the path for images ``shape`` (B, C, H, W), a ``kernel_size`` (KH, KW) kernel and ``itemsize``.

    ``shared_limit`` is the dynamic shared memory a block may use (the device's
    opt-in limit); ``max_tile`` caps the tiled path's tile side. In order of
    preference: the whole image with its step matrices in shared memory; the
    whole image with the matrices in global memory; the largest power-of-two
    tile side (at most ``max_tile``, at least 8 or ``max_tile``) with the
    matrices in shared memory; the largest tile with the matrices in global memory.
    """
    _, C, H, W = shape
    PH, PW = _effective_kernel(shape, kernel_size)
    matrices = C * C + PH * PW * C * _padded_channels(C)

    def tile_words(th, tw):
        return C * (th + PH - 1) * (tw + PW - 1)

    def fits(th, tw, in_global):
        return (tile_words(th, tw) + (0 if in_global else matrices)) * itemsize <= shared_limit

    top = 1
    while top * 2 <= max(1, min(max_tile, max(H, W))):
        top *= 2
    sides = [top >> k for k in range(top.bit_length())]  # top, top/2, ..., 1
    candidates = [(H, W, False), (H, W, True)]
    candidates += [(min(s, H), min(s, W), False) for s in sides if s >= min(8, top)]
    candidates += [(min(s, H), min(s, W), True) for s in sides]
    for th, tw, in_global in candidates:
        if fits(th, tw, in_global):
            groups = _padded_channels(C) // OUTPUTS_PER_THREAD
            items = min(th, tw) * groups
            threads = max(32, min(max_threads, -(-items // 32) * 32))
            shared = (tile_words(th, tw) + (0 if in_global else matrices)) * itemsize
            return Plan(th, tw, threads, shared, in_global, -(-H // th), -(-W // tw))
    raise ValueError(
        f"solve: images of {C} channels with a {PH}x{PW} kernel need {tile_words(1, 1) * itemsize} bytes of shared "
        f"memory per block even for a 1x1 tile; this device allows {shared_limit}. Use backend='numpy'."
    )


def _index_type(device, *sizes):
    return "int64" if device.index64 or max(sizes) > _INDEX32_LIMIT else "int32"


def solve(device, y, w, orient: Orientation, transpose: bool = False, *, max_tile=MAX_TILE):
    """``T^-1 y`` (or ``T^-T y`` when ``transpose``) on ``device``; returns a fresh C-contiguous array."""
    xp = device.xp
    y = xp.ascontiguousarray(y)
    w = xp.ascontiguousarray(w)
    B, C, H, W = (int(n) for n in y.shape)
    KH, KW = (int(n) for n in w.shape[2:])
    PH, PW = _effective_kernel(y.shape, (KH, KW))
    dtype = np.dtype(y.dtype)
    how = plan(y.shape, (KH, KW), dtype.itemsize, shared_limit=device.max_shared_memory_per_block_optin,
               max_threads=min(MAX_THREADS, device.max_threads_per_block), max_tile=max_tile)
    index = _index_type(device, y.size, B * how.tiles_h)
    i32 = np.int32
    flags = (i32(orient.flip_h), i32(orient.flip_w), i32(transpose))

    if how.matrices_in_global:
        scratch = device.empty((C * C,), dtype)
        given = device.empty((PH * PW * C * _padded_channels(C),), dtype)
        prepare = device.function(_FAMILY, "solve_prepare", dtype.name, index)
        prepare((1,), (min(how.threads, 256),), (w, scratch, given, i32(C), i32(KH), i32(KW), i32(PH), i32(PW),
                                                   *flags))
    else:
        given = device.empty((1,), dtype)  # unused by the kernel

    x = device.empty(y.shape, dtype)
    tiles = device.function(_FAMILY, "solve_tiles", dtype.name, index)
    if how.shared_bytes > tiles.max_dynamic_shared_size_bytes:
        tiles.max_dynamic_shared_size_bytes = how.shared_bytes
    index_scalar = np.int64 if index == "int64" else np.int32
    fixed = (y, w, given, x, index_scalar(B), i32(C), i32(H), i32(W), i32(KH), i32(KW), i32(PH), i32(PW),
             *flags, i32(how.matrices_in_global), i32(how.tile_h), i32(how.tile_w))
    for D in range(how.tiles_h + how.tiles_w - 1):
        first = max(0, D - how.tiles_w + 1)
        last = min(how.tiles_h - 1, D)
        tiles(((last - first + 1) * B,), (how.threads,), fixed + (i32(D), i32(first)), shared_mem=how.shared_bytes)
    return x
