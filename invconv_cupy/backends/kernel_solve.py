"""The triangular solve on ``kernels/solve.cu``, shared by the kernel backends (``cupy``, ``emulate``).

:func:`solve` computes ``T^-1 y`` (or ``T^-T y``) on a kernel *device* (see
:mod:`invconv_cupy.backends.kernel_launch`) in two or three launches on the
current stream, nothing read back to the host:

0. ``solve_invert`` (many channels only): ``A^-1`` by columns in global memory;
1. ``solve_prepare`` (many blocks) writes ``A^-1`` and the step matrices
   ``M_t = -A^-1 W_t`` to global memory once per call, the inputs' offsets, and
   zeroes the work counter and the tiles' progress counters;
2. ``solve_wavefront_g{G}``, a persistent grid: blocks claim work items (a tile
   of one or more images) in dependency order from an atomic counter and run the
   tile's anti-diagonals in shared memory, each pixel's dot products split over a
   team of threads (``G`` outputs per thread, ``L`` lanes summed by warp
   shuffles). The tiles of one image hand over their border pixels diagonal by
   diagonal (a progress counter per tile, published every ``grain`` diagonals).

:func:`plan` picks the tile, the images per block, the team, the grain and the
grid from the shapes and the device's limits, by the cost model of
:mod:`~invconv_cupy.backends.solve_model`; the README's "Solve on the GPU"
section explains the choices.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..orientation import Orientation
from .kernel_launch import INT32_MAX, contiguous, launch
from .solve_model import Estimate, Layout, estimate, inverse_cycles, item_instructions, resident_blocks, step_cost

__all__ = ["Plan", "plan", "solve", "step_cost"]

#: the tiled path's largest tile side
MAX_TILE = 64
#: output channels per thread of a team (G) that ``solve.cu`` has entry points for
OUTPUTS_PER_THREAD = (1, 2, 4, 8, 16)
#: most threads per block for each G (``__launch_bounds__`` in solve.cu: 80 registers per thread at 768,
#: 96 at 640, 128 at 512, so that nothing spills)
MAX_THREADS_FOR_OUTPUTS = {1: 768, 2: 768, 4: 640, 8: 512, 16: 512}
#: most threads per block of any G
MAX_THREADS = max(MAX_THREADS_FOR_OUTPUTS.values())
#: lanes (L) that may share one (pixel, output group): powers of two up to a warp
LANES = (1, 2, 4, 8, 16, 32)
#: most images one block solves at once
MAX_SLOTS = 32
#: grid size when the device does not say how many SMs it has (an H100/H200 has 132)
DEFAULT_SMS = 132
#: most threads of a solve_invert block (8 warps, a column of A^-1 each)
INVERT_THREADS = 256
_FAMILY = "solve"


@dataclass(frozen=True)
class Plan:
    """How one solve runs (sizes in pixels, threads, ``ic_real`` words and bytes)."""

    channels: int
    tile_h: int
    tile_w: int
    tiles_h: int
    tiles_w: int
    threads: int                # per block of the wavefront (the communication warp included)
    grid: int                   # wavefront blocks (persistent: each claims work items until none is left)
    outputs_per_thread: int     # G
    lanes: int                  # L: threads that split the inputs of one (pixel, output group)
    mat_stride: int             # MS: words per input row of the step matrices (>= ceil(C/G)*G, odd in 16-byte units)
    channel_stride: int         # words per channel of a staged tile (odd)
    shared_bytes: int
    matrices_in_global: bool    # the steps read the step matrices (and offsets) from global memory
    prepare_grid: int
    prepare_threads: int
    prepare_shared_bytes: int
    slots: int                  # images per work item
    linked: bool                # an image's tiles hand over border pixels (a communication warp per block)
    grain: int                  # diagonals per published progress count (linked)
    inverse_in_global: bool     # solve_invert forms A^-1 (a third launch)
    invert_grid: int            # solve_invert: blocks of invert_threads threads, a warp per column of A^-1
    invert_threads: int
    estimate: Estimate          # the cost model's estimate of the wavefront launch (not a timing)

    @property
    def team(self) -> int:
        """Threads per pixel of a step: ``ceil(C/G)`` output groups times ``L`` lanes."""
        return -(-self.channels // self.outputs_per_thread) * self.lanes

    @property
    def launches(self) -> int:
        """Kernel launches per solve: the preparation (and the inversion) and the wavefront."""
        return 2 + self.inverse_in_global


def _tile_sides(limit):
    """Powers of two from the largest one <= ``limit`` down to 1."""
    top = 1 << (max(1, limit).bit_length() - 1)
    return [top >> k for k in range(top.bit_length())]


def _mat_stride(channels, outputs, itemsize):
    """Words per matrix row: every group's G entries, and an odd number of vector units (G words,
    at most 16 bytes) so that lanes reading successive rows hit different banks."""
    unit = min(outputs, max(1, 16 // itemsize))
    units = -(-channels // outputs) * outputs // unit
    return (units + (units % 2 == 0)) * unit


def _powers(limit):
    """1, 2, 4, .. up to ``limit``."""
    return [1 << k for k in range(max(1, limit).bit_length()) if 1 << k <= limit]


def _grains(diagonals):
    """Publishing grains worth trying for tiles of ``diagonals`` anti-diagonals: powers of two, and all."""
    return sorted(set(_powers(diagonals)) | {diagonals})


def plan(shape, kernel_size, itemsize, *, shared_limit, max_threads=MAX_THREADS, max_tile=None,
         outputs_per_thread=None, lanes=None, sm_count=DEFAULT_SMS, max_blocks=None, slots=None, grain=None,
         inverse_in_global=None, matrices_in_global=None) -> Plan:
    """Pick how images ``shape`` (B, C, H, W) are solved with a ``kernel_size`` kernel.

    ``shared_limit`` is the dynamic shared memory a block may use (the device's
    opt-in limit), ``max_threads`` its threads. The candidates: the whole image
    as one tile, or square tiles of a power-of-two side (at most
    :data:`MAX_TILE`, or ``max_tile``, which tests use to force many tiles);
    one or more images per block (``slots``); the step matrices in shared
    memory, or (only when no candidate fits with them) read from global memory.
    For each, the team (G outputs per thread, L lanes) is the cheapest by
    :func:`step_cost` for the block's longest step, the publishing grain of
    linked tiles the cheapest by :func:`~invconv_cupy.backends.solve_model.estimate`,
    and the plan is the candidate with the lowest estimate. ``outputs_per_thread``,
    ``lanes``, ``slots``, ``grain``, ``inverse_in_global`` and ``matrices_in_global``
    fix those choices;
    ``sm_count`` sizes the persistent grid, ``max_blocks`` caps it.

    Raises ``ValueError`` (naming ``backend='numpy'``) when nothing fits the
    device: one pixel's channels and halo in shared memory, or a team of
    ``ceil(C/16)`` threads in a block.
    """
    B, C, H, W = (int(n) for n in shape)
    PH, PW = min(kernel_size[0], H), min(kernel_size[1], W)
    if outputs_per_thread is not None and outputs_per_thread not in OUTPUTS_PER_THREAD:
        raise ValueError(f"outputs_per_thread must be one of {OUTPUTS_PER_THREAD}, got {outputs_per_thread}")
    if lanes is not None and lanes not in LANES:
        raise ValueError(f"lanes must be one of {LANES}, got {lanes}")
    for name, value in (("slots", slots), ("grain", grain), ("max_tile", max_tile), ("max_blocks", max_blocks)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    taps = PH * PW
    inputs = (taps - 1) * C
    in_block_bytes = C * (C | 1) * itemsize
    if inverse_in_global is None:
        inverse_in_global = in_block_bytes > shared_limit or inverse_cycles(C, False) < inverse_cycles(C, True)
    elif not inverse_in_global and in_block_bytes > shared_limit:
        raise ValueError(f"solve: A^-1 of {C} channels needs {in_block_bytes} bytes of shared memory per block; "
                         f"this device allows {shared_limit} (inverse_in_global=False)")
    outputs = [outputs_per_thread] if outputs_per_thread else list(OUTPUTS_PER_THREAD)
    lane_choices = [lanes] if lanes else [L for L in LANES if L <= max(1, inputs)]

    def shared_bytes(th, tw, in_global, G, n):
        chan = ((th + PH - 1) * (tw + PW - 1)) | 1
        matrices = 0 if in_global else inputs * _mat_stride(C, G, itemsize) + C * C
        return (matrices + n * C * chan) * itemsize + ((0 if in_global else inputs) + 1) * 4, chan

    cap = max_tile or MAX_TILE
    tiles = [(H, W)] if max(H, W) <= (max_tile or max(H, W)) else []
    tiles += [(min(s, H), min(s, W)) for s in _tile_sides(min(cap, max(H, W)))]
    tiles = list(dict.fromkeys(tiles))   # in order, without repeats
    best = {}
    for th, tw in tiles:
        tiles_h, tiles_w = -(-H // th), -(-W // tw)
        linked = tiles_h * tiles_w > 1 and taps > 1
        for in_global in (False, True) if matrices_in_global is None else (bool(matrices_in_global),):
            for n in [slots] if slots else _powers(min(B, MAX_SLOTS)):
                candidate = _candidate(B, C, H, W, PH, PW, th, tw, n, in_global, linked, itemsize, inputs, outputs,
                                       lane_choices, max_threads, shared_limit, shared_bytes, sm_count, max_blocks,
                                       grain)
                if candidate is not None and (in_global not in best or candidate[0] < best[in_global][0]):
                    best[in_global] = candidate
    if not best:
        smallest = min(shared_bytes(1, 1, True, G, 1)[0] for G in outputs)
        raise ValueError(
            f"solve: images of {C} channels with a {PH}x{PW} kernel need {smallest} bytes of shared memory per "
            f"block even for one pixel with its halo, and a team of at least {-(-C // max(outputs))} threads per "
            f"pixel; this device allows {shared_limit} bytes and {max_threads} threads (max_tile={max_tile}). "
            "Use backend='numpy'.")
    _, layout = best[False] if False in best else best[True]
    (th, tw, n, in_global, linked, G, L, threads, grid, chosen_grain, shared, chan, how) = layout
    MS = _mat_stride(C, G, itemsize)
    tiles_h, tiles_w = -(-H // th), -(-W // tw)
    if -(-B // n) * tiles_h * tiles_w + grid > INT32_MAX:
        raise ValueError(f"solve: {-(-B // n) * tiles_h * tiles_w} work items are more than the kernel's 32-bit "
                         "counter can claim; split the batch")
    prepare_threads = min(256, max(32, -(-max(C, MS) // 32) * 32))
    invert_threads = min(INVERT_THREADS, max_threads // 32 * 32)
    return Plan(C, th, tw, tiles_h, tiles_w, threads, grid, G, L, MS, chan, shared, in_global,
                min(C + inputs, 1024), prepare_threads, 0 if inverse_in_global else in_block_bytes, n, linked,
                chosen_grain, bool(inverse_in_global), -(-C * 32 // invert_threads), invert_threads, how)


def _candidate(B, C, H, W, PH, PW, th, tw, n, in_global, linked, itemsize, inputs, outputs, lane_choices,
               max_threads, shared_limit, shared_bytes, sm_count, max_blocks, grain):
    """(estimated cycles, choices) of the cheapest team and grain for one tile, placement and images per
    block, or None when nothing fits."""
    fitting = [G for G in outputs if shared_bytes(th, tw, in_global, G, n)[0] <= shared_limit]
    items = n * min(th, tw)   # the block's longest step
    comm = 32 if linked else 0
    teams = []
    for G in fitting:
        limit = min(max_threads, MAX_THREADS_FOR_OUTPUTS[G]) - comm
        for L in lane_choices:
            cost = step_cost(C, inputs, G, L, items, limit, itemsize) if limit > 0 else None
            if cost is not None:
                teams.append((cost, -L, G, L, limit))   # ties: more lanes (a shorter chain per thread)
    if not teams:
        return None
    _, _, G, L, limit = min(teams)
    team = -(-C // G) * L
    per_block = min(items, limit // team)
    threads = -(-per_block * team // 32) * 32 + comm
    shared, chan = shared_bytes(th, tw, in_global, G, n)
    tiles_h, tiles_w = -(-H // th), -(-W // tw)
    groups = -(-B // n)
    runnable = groups * min(2 * min(tiles_h, tiles_w), tiles_h * tiles_w) if linked else groups * tiles_h * tiles_w
    resident = resident_blocks(threads, shared, MAX_THREADS_FOR_OUTPUTS[G])
    grid = min(runnable, sm_count * resident, max_blocks or runnable)
    per_item = item_instructions(inputs, G, L, itemsize)
    matrix_bytes = inputs * _mat_stride(C, G, itemsize) * itemsize if in_global else 0
    choices = []
    for g in [grain] if grain else (_grains(th + tw - 1) if linked else [th + tw - 1]):
        layout = Layout(B, H, W, th, tw, n, team, per_block, per_item, matrix_bytes, shared, resident, grid, linked,
                        g)
        how = estimate(layout, sm_count)
        choices.append((how.cycles, -g, g, how))   # ties: the coarser grain (fewer fences)
    cycles, _, g, how = min(choices, key=lambda c: c[:2])
    return cycles, (th, tw, n, in_global, linked, G, L, threads, grid, g, shared, chan, how)


@dataclass(frozen=True)
class _Recipe:
    """Everything about a solve that depends only on shapes, dtype, flags and device limits."""

    plan: Plan
    dtype: str
    index: str
    entry: str
    invert_args: tuple     # scalars after (w, ainv)
    prepare_args: tuple    # scalars after (w, ainv, zmat, mat, work, nwork, offsets)
    wavefront_args: tuple  # scalars after (y, x, mat, zmat, work, offsets)
    zmat_words: int
    mat_words: int
    ainv_words: int
    counters: int          # the claim counter and the work items' progress counters
    offset_words: int


@functools.lru_cache(maxsize=512)
def _recipe(shape, kernel_size, dtype, flip_h, flip_w, transpose, shared_limit, max_threads, index64, sm_count,
            options) -> _Recipe:
    B, C, H, W = shape
    KH, KW = kernel_size
    PH, PW = min(KH, H), min(KW, W)
    how = plan(shape, kernel_size, dtype.itemsize, shared_limit=shared_limit, max_threads=max_threads,
               sm_count=sm_count, **dict(options))
    index = "int64" if index64 or B * C * H * W > INT32_MAX else "int32"
    i32 = np.int32
    flags = (i32(flip_h), i32(flip_w), i32(transpose))
    counters = 1 + -(-B // how.slots) * how.tiles_h * how.tiles_w
    inputs = (PH * PW - 1) * C
    EW = how.tile_w + PW - 1
    invert = (i32(C), i32(KH), i32(KW), i32(flip_h), i32(flip_w))
    prepare = (i32(C), i32(how.mat_stride), i32(KH), i32(KW), i32(PH), i32(PW), *flags, i32(how.channel_stride),
               i32(EW), i32(how.inverse_in_global))
    wavefront = (i32(B), i32(C), i32(H), i32(W), i32(PH), i32(PW), *flags, i32(how.tile_h), i32(how.tile_w),
                 i32(how.tiles_h), i32(how.tiles_w), i32(how.mat_stride), i32(how.channel_stride),
                 i32(how.lanes), i32(not how.matrices_in_global), i32(how.slots), i32(how.linked), i32(how.grain))
    return _Recipe(how, dtype.name, index, f"solve_wavefront_g{how.outputs_per_thread}", invert, prepare, wavefront,
                   C * C, max(1, inputs * how.mat_stride), C * C if how.inverse_in_global else 1, counters,
                   max(1, inputs))


def solve(device, y, w, orient: Orientation, transpose: bool = False, **options):
    """``T^-1 y`` (or ``T^-T y`` when ``transpose``) on ``device``; returns a fresh C-contiguous array.

    ``options`` are :func:`plan`'s choices to fix (``max_tile``, ``outputs_per_thread``,
    ``lanes``, ``slots``, ``grain``, ``inverse_in_global``, ``max_blocks``: tests, benchmarks).
    """
    y, w = contiguous(device, y), contiguous(device, w)
    sm_count = getattr(device, "multiprocessor_count", None) or DEFAULT_SMS
    r = _recipe(tuple(y.shape), tuple(w.shape[2:]), y.dtype, orient.flip_h, orient.flip_w, bool(transpose),
                device.max_shared_memory_per_block_optin, min(MAX_THREADS, device.max_threads_per_block),
                bool(device.index64), sm_count, tuple(sorted((k, v) for k, v in options.items() if v is not None)))
    how = r.plan
    zmat = device.empty((r.zmat_words,), y.dtype)
    mat = device.empty((r.mat_words,), y.dtype)
    ainv = device.empty((r.ainv_words,), y.dtype)
    ints = device.xp.empty((r.counters + r.offset_words,), np.int32)   # written by solve_prepare
    work, offsets = ints[:r.counters], ints[r.counters:]
    if how.inverse_in_global:
        launch(device, _FAMILY, "solve_invert", r.dtype, r.index, (how.invert_grid,), (how.invert_threads,),
               (w, ainv) + r.invert_args)
    launch(device, _FAMILY, "solve_prepare", r.dtype, r.index, (how.prepare_grid,), (how.prepare_threads,),
           (w, ainv, zmat, mat, work, np.int32(r.counters), offsets) + r.prepare_args,
           shared_mem=how.prepare_shared_bytes)
    x = device.empty(y.shape, y.dtype)
    launch(device, _FAMILY, r.entry, r.dtype, r.index, (how.grid,), (how.threads,), (y, x, mat, zmat, work, offsets)
           + r.wavefront_args, shared_mem=how.shared_bytes)
    return x
