"""The triangular solve on ``kernels/solve.cu``, shared by the kernel backends (``cupy``, ``emulate``).

:func:`solve` computes ``T^-1 y`` (or ``T^-T y``) on a kernel *device* (see
:mod:`invconv_cupy.backends.kernel_launch`) in two launches on the current
stream, nothing read back to the host:

1. ``solve_prepare`` (many blocks) writes ``A^-1`` and the step matrices
   ``M_t = -A^-1 W_t`` to global memory once per call, and zeroes the tile
   counter and ready flags;
2. ``solve_wavefront_g{G}``, a persistent grid: blocks claim tiles in dependency
   order from an atomic counter, wait on the ready flags of the tiles their halo
   reads, and run the tile's anti-diagonals in shared memory, each pixel's dot
   products split over a team of threads (``G`` outputs per thread, ``L`` lanes
   summed by warp shuffles). An image that fits in shared memory is one tile.

:func:`plan` picks the tile, the team and the grid from the shapes and the
device's limits; the choices and the per-step cost model are in the README's
"Solve on the GPU" section.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..orientation import Orientation
from .kernel_launch import INT32_MAX, contiguous, launch

#: the tiled path's largest tile side
MAX_TILE = 64
#: output channels per thread of a team (G) that ``solve.cu`` has entry points for
OUTPUTS_PER_THREAD = (1, 2, 4, 8, 16)
#: most threads per block for each G (``__launch_bounds__`` in solve.cu: 80 registers per thread at 768,
#: 128 at 512, so that nothing spills)
MAX_THREADS_FOR_OUTPUTS = {1: 768, 2: 768, 4: 768, 8: 512, 16: 512}
#: most threads per block of any G
MAX_THREADS = max(MAX_THREADS_FOR_OUTPUTS.values())
#: lanes (L) that may share one (pixel, output group): powers of two up to a warp
LANES = (1, 2, 4, 8, 16, 32)
#: grid size when the device does not say how many SMs it has (an H100/H200 has 132)
DEFAULT_SMS = 132
#: per SM: threads, shared memory (bytes), resident blocks (sm_80/sm_90)
SM_THREADS, SM_SHARED, SM_BLOCKS = 2048, 228 * 1024, 32
#: shared memory the CUDA runtime reserves per block (bytes)
BLOCK_RESERVED_SHARED = 1024
_FAMILY = "solve"


#: the team cost model of :func:`step_cost` (an estimate in issued instructions, after the SASS
#: counts of ``bench/solve_sass.py``): a pixel item's own instructions, and the issue slots a lone
#: warp needs per instruction (its dependent loads and shuffles leave it waiting)
ITEM_INSTRUCTIONS = 60
LATENCY_FACTOR = 2


def step_cost(channels, inputs, outputs_per_thread, lanes, diagonal, max_threads, itemsize):
    """Estimated scheduler cycles of one step over ``diagonal`` pixels with teams of
    ``ceil(C/G)`` groups x ``lanes`` threads (None when a team does not fit in a block).

    Per input a thread issues an offset load, an x load, ``ceil(G * itemsize / 16)``
    vector loads of matrix entries, G FMAs and about two loop instructions; then
    ``G log2(L)`` shuffles and as many adds, and the item's own instructions. Teams
    beyond the block's threads take further rounds. A scheduler (4 per SM) issues
    one instruction per cycle for all its warps, a lone warp about one per
    :data:`LATENCY_FACTOR` cycles. An estimate to rank teams, not a timing.
    """
    G, L = outputs_per_thread, lanes
    team = -(-channels // G) * L
    if team > max_threads:
        return None
    teams = min(diagonal, max_threads // team)
    rounds = -(-diagonal // teams)
    per_input = 4 + G + -(-G * itemsize // 16)
    per_thread = -(-inputs // L) * per_input + 2 * G * (L.bit_length() - 1) + ITEM_INSTRUCTIONS
    warps_per_scheduler = -(-(-(-teams * team // 32)) // 4)
    return rounds * per_thread * max(LATENCY_FACTOR, warps_per_scheduler)


@dataclass(frozen=True)
class Plan:
    """How one solve runs (sizes in pixels, threads, ``ic_real`` words and bytes)."""

    channels: int
    tile_h: int
    tile_w: int
    tiles_h: int
    tiles_w: int
    threads: int                # per block of the wavefront
    grid: int                   # wavefront blocks (persistent: each claims tiles until none is left)
    outputs_per_thread: int     # G
    lanes: int                  # L: threads that split the inputs of one (pixel, output group)
    mat_stride: int             # MS: words per input row of the step matrices (>= ceil(C/G)*G, odd in 16-byte units)
    channel_stride: int         # words per channel of the staged tile (odd)
    shared_bytes: int
    matrices_in_global: bool    # the steps read the step matrices from global memory (else a shared copy)
    prepare_grid: int
    prepare_threads: int
    prepare_shared_bytes: int

    @property
    def team(self) -> int:
        """Threads per pixel of a step: ``ceil(C/G)`` output groups times ``L`` lanes."""
        return -(-self.channels // self.outputs_per_thread) * self.lanes

    @property
    def launches(self) -> int:
        """Kernel launches per solve: the preparation and the wavefront."""
        return 2


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


def plan(shape, kernel_size, itemsize, *, shared_limit, max_threads=MAX_THREADS, max_tile=None,
         outputs_per_thread=None, lanes=None, sm_count=DEFAULT_SMS, max_blocks=None) -> Plan:
    """Pick the tile, the team and the grid for images ``shape`` (B, C, H, W) and a ``kernel_size`` kernel.

    ``shared_limit`` is the dynamic shared memory a block may use (the device's
    opt-in limit). The tile, in order of preference: the whole image with its
    step matrices in shared memory; the whole image with the matrices read from
    global memory; the largest power-of-two tile side (at most :data:`MAX_TILE`,
    at least 8 or the cap if smaller) with the matrices in shared memory; the
    largest tile with them in global memory. The team (G outputs per thread,
    L lanes) is the cheapest by :func:`step_cost` for the tile's longest
    diagonal among those whose matrices fit. ``max_tile`` caps the tile side
    (tests force many tiles with it); ``outputs_per_thread`` and ``lanes`` fix
    G and L; ``sm_count`` sizes the persistent grid (enough blocks to fill every
    SM), ``max_blocks`` caps it.
    """
    B, C, H, W = (int(n) for n in shape)
    PH, PW = min(kernel_size[0], H), min(kernel_size[1], W)
    if outputs_per_thread is not None and outputs_per_thread not in OUTPUTS_PER_THREAD:
        raise ValueError(f"outputs_per_thread must be one of {OUTPUTS_PER_THREAD}, got {outputs_per_thread}")
    if lanes is not None and lanes not in LANES:
        raise ValueError(f"lanes must be one of {LANES}, got {lanes}")
    prepare_shared = C * (C | 1) * itemsize
    if prepare_shared > shared_limit:
        raise ValueError(f"solve: A^-1 of {C} channels needs {prepare_shared} bytes of shared memory per block; "
                         f"this device allows {shared_limit}. Use backend='numpy'.")
    taps = PH * PW
    inputs = (taps - 1) * C
    outputs = [outputs_per_thread] if outputs_per_thread else list(OUTPUTS_PER_THREAD)

    def shared_bytes(th, tw, in_global, G):
        chan = ((th + PH - 1) * (tw + PW - 1)) | 1
        matrices = 0 if in_global else inputs * _mat_stride(C, G, itemsize) + C * C
        return (matrices + C * chan) * itemsize + (inputs + 1) * 4, chan

    sides = _tile_sides(max(1, min(max_tile or MAX_TILE, max(H, W))))
    candidates = [(H, W, False), (H, W, True)] if max_tile is None or max(H, W) <= max_tile else []
    candidates += [(min(s, H), min(s, W), False) for s in sides if s >= min(8, sides[0])]
    candidates += [(min(s, H), min(s, W), True) for s in sides]
    for th, tw, in_global in candidates:
        fitting = [G for G in outputs if shared_bytes(th, tw, in_global, G)[0] <= shared_limit]
        if fitting:
            break
    else:
        raise ValueError(
            f"solve: images of {C} channels with a {PH}x{PW} kernel need "
            f"{min(shared_bytes(1, 1, True, G)[0] for G in outputs)} bytes of shared memory per block even for a "
            f"1x1 tile; this device allows {shared_limit}. Use backend='numpy'."
        )
    diagonal = min(th, tw)
    teams = []
    for G in fitting:
        for L in [lanes] if lanes else [L for L in LANES if L <= max(1, inputs)]:
            cost = step_cost(C, inputs, G, L, diagonal, min(max_threads, MAX_THREADS_FOR_OUTPUTS[G]), itemsize)
            if cost is not None:
                teams.append((cost, -L, G, L))   # ties: more lanes (a shorter chain per thread)
    if not teams:
        raise ValueError(f"solve: {C} channels need more threads per pixel than a block's {max_threads} "
                         f"(outputs_per_thread={outputs_per_thread}, lanes={lanes}); use backend='numpy'")
    _, _, G, L = min(teams)
    shared, chan = shared_bytes(th, tw, in_global, G)
    team = -(-C // G) * L
    threads = -(-min(diagonal, min(max_threads, MAX_THREADS_FOR_OUTPUTS[G]) // team) * team // 32) * 32
    tiles_h, tiles_w = -(-H // th), -(-W // tw)
    tiles = B * tiles_h * tiles_w
    per_sm = max(1, min(SM_BLOCKS, SM_THREADS // threads, SM_SHARED // (shared + BLOCK_RESERVED_SHARED)))
    ready_at_once = B * min(tiles_h, tiles_w)   # the widest tile anti-diagonal: more blocks would only wait
    grid = min(tiles, ready_at_once, sm_count * per_sm, max_blocks or tiles)
    if tiles + grid > INT32_MAX:
        raise ValueError(f"solve: {tiles} tiles are more than the kernel's 32-bit tile counter can claim; "
                         "split the batch")
    MS = _mat_stride(C, G, itemsize)
    prepare_threads = min(256, max(32, -(-max(C, MS) // 32) * 32))
    return Plan(C, th, tw, tiles_h, tiles_w, threads, grid, G, L, MS, chan, shared, in_global,
                min(C + inputs, 1024), prepare_threads, prepare_shared)


@dataclass(frozen=True)
class _Recipe:
    """Everything about a solve that depends only on shapes, dtype, flags and device limits."""

    plan: Plan
    dtype: str
    index: str
    entry: str
    prepare_args: tuple    # scalars after (w, zmat, mat, work)
    wavefront_args: tuple  # scalars after (y, x, mat, zmat, work)
    zmat_words: int
    mat_words: int
    work_words: int


@functools.lru_cache(maxsize=512)
def _recipe(shape, kernel_size, dtype, flip_h, flip_w, transpose, shared_limit, max_threads, index64, max_tile,
            outputs_per_thread, lanes, sm_count, max_blocks) -> _Recipe:
    B, C, H, W = shape
    KH, KW = kernel_size
    PH, PW = min(KH, H), min(KW, W)
    how = plan(shape, kernel_size, dtype.itemsize, shared_limit=shared_limit, max_threads=max_threads,
               max_tile=max_tile, outputs_per_thread=outputs_per_thread, lanes=lanes, sm_count=sm_count,
               max_blocks=max_blocks)
    index = "int64" if index64 or B * C * H * W > INT32_MAX else "int32"
    i32 = np.int32
    flags = (i32(flip_h), i32(flip_w), i32(transpose))
    work = 1 + B * how.tiles_h * how.tiles_w
    prepare = (i32(work), i32(C), i32(how.mat_stride), i32(KH), i32(KW), i32(PH), i32(PW), *flags)
    wavefront = (i32(B), i32(C), i32(H), i32(W), i32(PH), i32(PW), *flags, i32(how.tile_h), i32(how.tile_w),
                 i32(how.tiles_h), i32(how.tiles_w), i32(how.mat_stride), i32(how.channel_stride),
                 i32(how.lanes), i32(not how.matrices_in_global))
    return _Recipe(how, dtype.name, index, f"solve_wavefront_g{how.outputs_per_thread}", prepare, wavefront,
                   C * C, max(1, (PH * PW - 1) * C * how.mat_stride), work)


def solve(device, y, w, orient: Orientation, transpose: bool = False, *, max_tile=None, outputs_per_thread=None,
          lanes=None, max_blocks=None):
    """``T^-1 y`` (or ``T^-T y`` when ``transpose``) on ``device``; returns a fresh C-contiguous array.

    ``max_tile``, ``outputs_per_thread`` and ``lanes`` override :func:`plan`'s
    choices, ``max_blocks`` caps the persistent grid (tests, benchmarks).
    """
    y, w = contiguous(device, y), contiguous(device, w)
    sm_count = getattr(device, "multiprocessor_count", None) or DEFAULT_SMS
    r = _recipe(tuple(y.shape), tuple(w.shape[2:]), y.dtype, orient.flip_h, orient.flip_w, bool(transpose),
                device.max_shared_memory_per_block_optin, min(MAX_THREADS, device.max_threads_per_block),
                bool(device.index64), max_tile, outputs_per_thread, lanes, sm_count, max_blocks)
    how = r.plan
    zmat = device.empty((r.zmat_words,), y.dtype)
    mat = device.empty((r.mat_words,), y.dtype)
    work = device.xp.empty((r.work_words,), np.int32)   # zeroed by solve_prepare
    launch(device, _FAMILY, "solve_prepare", r.dtype, r.index, (how.prepare_grid,), (how.prepare_threads,),
           (w, zmat, mat, work) + r.prepare_args, shared_mem=how.prepare_shared_bytes)
    x = device.empty(y.shape, y.dtype)
    launch(device, _FAMILY, r.entry, r.dtype, r.index, (how.grid,), (how.threads,), (y, x, mat, zmat, work)
           + r.wavefront_args, shared_mem=how.shared_bytes)
    return x
