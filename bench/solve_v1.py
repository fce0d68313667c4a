"""The solver kernel v1 (``bench/solve_v1.cu``), kept as the GPU benchmark's baseline ``solve_v1``.

This was ``invconv_cupy/backends/kernel_solve.py`` before the v2 kernel replaced
it; the code below is unchanged but for where the kernel text comes from.
:func:`solve` computes ``T^-1 y`` (or ``T^-T y``) on a kernel *device*. Two
paths, picked by :func:`plan` from the shared memory a block may use:

- **single launch**: one block per image holds the whole image (all channels,
  plus a zero halo of ``KH-1`` rows and ``KW-1`` columns) in shared memory and
  runs all ``H + W - 1`` anti-diagonals with one ``__syncthreads()`` each;
- **tiled**: square tiles of ``T x T`` pixels, one launch per *tile*
  anti-diagonal (``ceil(H/T) + ceil(W/T) - 1`` launches), each block solving one
  tile of one image the same way, its halo read from the already-solved tiles.

Each block derives its step matrices (``A^-1`` and ``-A^-1 W_tap``) from the
weight itself, in shared memory (one thread per column of ``A^-1``). When those
matrices do not fit next to the image (or a tile), one single-block
``solve_prepare`` launch writes them to global memory first.

:class:`V1Device` wraps a ``cupy`` or ``emulate`` device so that the family
``solve_v1`` is this file's kernel text: ``solve(V1Device(device), y, w, orient)``.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from invconv_cupy import kernel_source
from invconv_cupy.backends.kernel_launch import INT32_MAX, contiguous, index_scalar, launch

#: the tiled path's largest tile side (smaller tiles put more blocks on each tile anti-diagonal)
MAX_TILE = 64
#: most threads per block (a step has at most ``min(H, W) * ceil(C / G)`` work items)
MAX_THREADS = 512
#: global loads in flight per thread while a block stages its tile (``IC_SOLVE_BATCH`` in ``solve.cu``)
STAGE_BATCH = 16
#: output channels per thread in a step (register blocking) that ``solve.cu`` has entry points for
OUTPUTS_PER_THREAD = (1, 2, 4)
_FAMILY = "solve_v1"
_SOURCE = Path(__file__).with_name("solve_v1.cu")


def default_outputs_per_thread(channels: int) -> int:
    """G for ``channels``: 1 for few channels (no padding waste), else 2."""
    return 1 if channels < 8 else 2


@dataclass(frozen=True)
class Plan:
    """How one solve runs."""

    tile_h: int
    tile_w: int
    tiles_h: int
    tiles_w: int
    threads: int
    outputs_per_thread: int
    shared_bytes: int
    matrices_in_global: bool  # one solve_prepare launch first; the steps read the matrices from global memory

    @property
    def launches(self) -> int:
        return self.tiles_h + self.tiles_w - 1 + int(self.matrices_in_global)


def _padded(channels, outputs):
    return -(-channels // outputs) * outputs


def _tile_sides(limit):
    """Powers of two from the largest one <= ``limit`` down to 1."""
    top = 1
    while top * 2 <= limit:
        top *= 2
    return [top >> k for k in range(top.bit_length())]


def plan(shape, kernel_size, itemsize, *, shared_limit, max_threads=MAX_THREADS, max_tile=None,
         outputs_per_thread=None) -> Plan:
    """Pick the path for images ``shape`` (B, C, H, W) and a ``kernel_size`` (KH, KW) kernel.

    ``shared_limit`` is the dynamic shared memory a block may use (the device's
    opt-in limit). ``max_tile`` caps the tile side on both paths (None: the
    whole image may be one tile, other tiles are at most :data:`MAX_TILE`); tests
    use it to force many tiles. In order of preference: the whole image with its
    step matrices in shared memory; the whole image with the matrices in global
    memory; the largest power-of-two tile side (at least 8, or the cap if smaller)
    with the matrices in shared memory; the largest tile with the matrices in
    global memory.
    """
    _, C, H, W = (int(n) for n in shape)
    PH, PW = min(kernel_size[0], H), min(kernel_size[1], W)
    G = outputs_per_thread or default_outputs_per_thread(C)
    if G not in OUTPUTS_PER_THREAD:
        raise ValueError(f"outputs_per_thread must be one of {OUTPUTS_PER_THREAD}, got {G}")
    Cp = _padded(C, G)
    matrices = C * C + PH * PW * C * Cp   # ainv + prepared
    weights = PH * PW * C * C             # wbuf, staged where the tile goes

    def words(th, tw, in_global):
        tile = C * (th + PH - 1) * (tw + PW - 1)
        return tile if in_global else matrices + max(tile, weights)

    sides = _tile_sides(max(1, min(max_tile or MAX_TILE, max(H, W))))
    candidates = [(H, W, False), (H, W, True)] if max_tile is None or max(H, W) <= max_tile else []
    candidates += [(min(s, H), min(s, W), False) for s in sides if s >= min(8, sides[0])]
    candidates += [(min(s, H), min(s, W), True) for s in sides]
    for th, tw, in_global in candidates:
        shared = words(th, tw, in_global) * itemsize
        if shared <= shared_limit:
            # enough threads for the widest anti-diagonal, and to stage the tile in about 4 rounds of loads
            items = max(min(th, tw) * (Cp // G), C * (th + PH - 1) * (tw + PW - 1) // (4 * STAGE_BATCH))
            threads = min(max_threads, -(-items // 32) * 32)
            return Plan(th, tw, -(-H // th), -(-W // tw), threads, G, shared, in_global)
    raise ValueError(
        f"solve: images of {C} channels with a {PH}x{PW} kernel need {words(1, 1, True) * itemsize} bytes of "
        f"shared memory per block even for a 1x1 tile; this device allows {shared_limit}. Use backend='numpy'."
    )


@dataclass(frozen=True)
class _Recipe:
    """Everything about a solve that depends only on shapes, dtype, flags and device limits."""

    plan: Plan
    dtype: str
    index: str
    entry: str
    prepare_args: tuple   # scalars after (w, scratch, given)
    scratch_words: int
    given_words: int
    launches: tuple       # (grid, scalars after (y, w, given, x)) per tile anti-diagonal


@functools.lru_cache(maxsize=512)
def _recipe(shape, kernel_size, dtype, flip_h, flip_w, transpose, shared_limit, max_threads, index64, max_tile,
            outputs_per_thread) -> _Recipe:
    B, C, H, W = shape
    KH, KW = kernel_size
    PH, PW = min(KH, H), min(KW, W)
    how = plan(shape, kernel_size, dtype.itemsize, shared_limit=shared_limit, max_threads=max_threads,
               max_tile=max_tile, outputs_per_thread=outputs_per_thread)
    Cp = _padded(C, how.outputs_per_thread)
    index = "int64" if index64 or B * C * H * W > INT32_MAX else "int32"
    i32 = np.int32
    flags = (i32(flip_h), i32(flip_w), i32(transpose))
    fixed = (index_scalar(index, B), i32(C), i32(Cp), i32(H), i32(W), i32(KH), i32(KW), i32(PH), i32(PW), *flags,
             i32(how.matrices_in_global), i32(how.tile_h), i32(how.tile_w))
    launches = []
    for D in range(how.tiles_h + how.tiles_w - 1):
        first, last = max(0, D - how.tiles_w + 1), min(how.tiles_h - 1, D)
        launches.append((((last - first + 1) * B,), fixed + (i32(D), i32(first))))
    return _Recipe(how, dtype.name, index, f"solve_tiles_g{how.outputs_per_thread}",
                   (i32(C), i32(Cp), i32(KH), i32(KW), i32(PH), i32(PW), *flags),
                   C * C + PH * PW * C * C, PH * PW * C * Cp, tuple(launches))


def solve(device, y, w, orient, transpose: bool = False, *, max_tile=None,
          outputs_per_thread=None):
    """``T^-1 y`` (or ``T^-T y`` when ``transpose``) on ``device``; returns a fresh C-contiguous array.

    ``max_tile`` and ``outputs_per_thread`` override :func:`plan`'s choices (tests, benchmarks).
    """
    y, w = contiguous(device, y), contiguous(device, w)
    r = _recipe(tuple(y.shape), tuple(w.shape[2:]), y.dtype, orient.flip_h, orient.flip_w, bool(transpose),
                device.max_shared_memory_per_block_optin, min(MAX_THREADS, device.max_threads_per_block),
                bool(device.index64), max_tile, outputs_per_thread)
    how = r.plan
    if how.matrices_in_global:
        scratch = device.empty((r.scratch_words,), y.dtype)
        given = device.empty((r.given_words,), y.dtype)
        launch(device, _FAMILY, "solve_prepare", r.dtype, r.index, (1,), (min(how.threads, 256),),
               (w, scratch, given) + r.prepare_args)
    else:
        given = w  # not read: each block prepares its own matrices
    x = device.empty(y.shape, y.dtype)
    head = (y, w, given, x)
    for grid, scalars in r.launches:
        launch(device, _FAMILY, r.entry, r.dtype, r.index, grid, (how.threads,), head + scalars,
               shared_mem=how.shared_bytes)
    return x


def source(dtype: str, index: str) -> str:
    """The v1 kernel text for ``dtype`` and ``index``, assembled like a family of ``kernels/``."""
    return "\n".join((kernel_source.preamble(dtype, index), '#line 1 "common.cuh"', kernel_source.read("common.cuh"),
                      '#line 1 "solve_v1.cu"', _SOURCE.read_text(encoding="utf-8")))


class V1Device:
    """A ``cupy`` or ``emulate`` kernel device whose ``solve_v1`` family is ``bench/solve_v1.cu``;
    everything else (limits, ``empty``, ``xp``) is the wrapped device's."""

    def __init__(self, device):
        self._device = device
        self._functions = {}

    def __getattr__(self, name):
        return getattr(self._device, name)

    def function(self, family, entry, dtype, index):
        if family != _FAMILY:
            return self._device.function(family, entry, dtype, index)
        key = (entry, dtype, index)
        if key not in self._functions:
            self._functions[key] = self._compile(entry, dtype, index)
        return self._functions[key]

    def _compile(self, entry, dtype, index):
        text = source(dtype, index)
        if self._device.name == "cupy":
            import cupy

            from invconv_cupy.cuda_device import COMPILE_OPTIONS

            return cupy.RawModule(code=text, options=COMPILE_OPTIONS).get_function(entry)
        from invconv_cupy.emulator import EmulatedFunction
        from invconv_cupy.emulator.build import build, emulator_source

        entries = kernel_source.find_entry_points(text)
        library = ctypes.CDLL(str(build(emulator_source(text, entries), self._device.sanitize)))
        return EmulatedFunction(self._device, library, entry)
