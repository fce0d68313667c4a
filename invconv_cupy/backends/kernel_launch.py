"""Launching the CUDA kernels: the layer shared by the ``cupy`` and ``emulate`` backends.

A kernel primitive (``kernel_conv.py``, ``kernel_solve.py``) is written once,
against a *device*; the ``cupy`` backend passes a
:class:`~invconv_cupy.cuda_device.CupyDevice`, the ``emulate`` backend an
:class:`~invconv_cupy.emulator.EmulatorDevice`. A device has

- ``name``, ``xp`` (CuPy or NumPy);
- ``empty(shape, dtype)``: a fresh output (the emulator fills it with NaN);
- ``function(family, entry, dtype, index)``: the compiled entry point, called as
  ``fn(grid, block, args, shared_mem=0)`` on the current stream, with a settable
  ``max_dynamic_shared_size_bytes``;
- ``max_threads_per_block``, ``max_shared_memory_per_block`` (without opt-in),
  ``max_shared_memory_per_block_optin``: the current device's limits;
- ``index64``: when true, always use the 64-bit index variants (tests);
- optionally ``multiprocessor_count``: its SMs (``kernel_solve`` sizes its persistent grid by it).

Writing a kernel family (the portable CUDA subset)
--------------------------------------------------
- One file ``kernels/<family>.cu``; it is found by its name, nothing to register.
  Entry points are declared ``extern "C" __global__ void name(...)`` at the start
  of a line; ``check_kernels`` and the emulator find them by that pattern. Start
  every entry point's name with the family's name (``solve_...``), so that logs
  and profiles say where a kernel lives.
- Do not ``#include`` anything: the loader prepends a preamble defining
  ``ic_real`` (float/double), ``ic_index`` (int/long long), ``IC_REAL_IS_DOUBLE``,
  ``IC_INDEX_IS_64``, then ``kernels/common.cuh`` (``ic_thread_index()``,
  ``ic_grid_stride()``, the flag accesses ``ic_load_acquire`` & co.). Compute flat
  offsets in ``ic_index``.
- Parameters: pointers to ``ic_real``/integers, and scalars (``int``,
  ``ic_index``, ``ic_real``, ...); pass them from Python as C-contiguous arrays
  and fixed-width NumPy scalars (``np.int32``, ``INDEX_SCALARS[index]``,
  ``np.dtype(dtype).type``), never Python numbers. The emulator checks each
  argument against the kernel's parameter types.
- Dynamic shared memory: ``IC_DYNAMIC_SHARED(ic_real, tile);`` in the kernel body
  (a 16-byte aligned ``ic_real* tile``), sized by the launch's ``shared_mem``.
  Static ``__shared__`` arrays in a kernel body work too.
- Built-ins the emulator supports: see below and ``kernels/cuda_shim.h``. No
  cooperative groups, ``__match_*``/``__reduce_*`` warp intrinsics, ``cp.async``,
  inline PTX or textures. ``__syncthreads()`` after some threads of the block
  returned is allowed (returned threads leave the barrier, as on sm_70+).
- Check it: ``python -m invconv_cupy.check_kernels`` (NVRTC, no GPU needed) and
  the tests under ``backend="emulate"``.

What the emulator gives kernel authors
--------------------------------------
The ``emulate`` backend (:mod:`invconv_cupy.emulator`) runs a kernel with CUDA's
execution model, and turns what a GPU would leave undefined into errors
(:class:`~invconv_cupy.emulator.EmulatedKernelError`, naming kernel, block,
thread and source line):

- **Warps**: 32 threads (linear thread index ``x + y*Dx + z*Dx*Dy``),
  ``warpSize``; ``__shfl_sync``, ``__shfl_up_sync``, ``__shfl_down_sync``,
  ``__shfl_xor_sync`` (any 4- or 8-byte type, ``width`` a power of two),
  ``__ballot_sync``, ``__any_sync``, ``__all_sync``, ``__syncwarp``,
  ``__activemask``, ``__popc``/``__ffs``/``__clz``/``__brev``. Errors: the calling
  lane is not in its mask; the lanes one mask names call different intrinsics,
  call sites or masks (``__syncwarp``: the same mask anywhere, as on sm_70+); a
  lane a pending intrinsic waits for is in ``__syncthreads``. Exited lanes (and
  the missing lanes of a partial warp) drop out of masks; reading one gives NaN
  bits. ``__activemask()`` returns the lanes at that call once the others wait
  elsewhere or exited.
- **Blocks that run at once** (``concurrent_blocks``, default 4, the first wave
  together): a persistent kernel may spin on other blocks' ready flags as long as
  it claims work in dependency order (an ``atomicAdd`` counter), since it must make
  progress with any number of resident blocks. Static ``__shared__`` is per block;
  ``__syncthreads_count``/``_and``/``_or`` work.
- **Memory order**: atomics (``atomicAdd``, ``Sub``, ``Exch``, ``Min``, ``Max``,
  ``CAS``, ``And``, ``Or``, ``Xor``, ``Inc``, ``Dec``) are relaxed, as on a GPU.
  Publish and wait on flags with ``common.cuh``'s ``ic_store_release(flag, v)``
  / ``ic_load_acquire(flag)`` (or ``__threadfence()`` around
  ``ic_store_relaxed``/``ic_load_relaxed``); under NVRTC they are volatile
  accesses next to ``__threadfence()``, no inline PTX. Spin only through them:
  the emulator sees the spin (the thread yields) and its watchdog stops a spin
  that never ends; a raw ``volatile`` loop it can neither interleave nor stop.
  After the acquire, read other blocks' data with plain or ``__ldcg`` loads,
  never ``__ldg`` (the read-only path is not coherent within a launch).
  ``cp.async`` is not emulated: plain coalesced loads into shared memory do.
- **Checks**: misaligned typed accesses (a ``float4``/``double2`` or
  ``alignas`` struct load through a reinterpreted pointer) are errors; a launch
  whose blocks stop progressing is stopped by the watchdog with a report of where
  each block's threads wait or spin; ``__trap()`` is an error.
- **Finding races**: ``EmulatorDevice(race=True)`` (or
  ``INVCONV_EMULATE_RACE=1``) switches threads at random at every built-in and
  perturbs the timing between blocks, so a missing ``__syncthreads``,
  ``__syncwarp`` or flag wait shows as wrong results (``tests/kernel_breaks.py``
  switches each off in turn; ``tests/test_kernel_races.py`` is the catalogue).
  A missing fence changes nothing on x86; ``sanitize="thread"`` reports it (and
  every other unsynchronized access) as a ThreadSanitizer data race.
  ``INVCONV_EMULATE_SEED`` replays a block's thread schedule.

Writing a primitive
-------------------
A primitive takes the device first and the backend's arguments after; it makes
inputs C-contiguous (kernels ignore strides), allocates outputs with
``device.empty`` and launches with :func:`launch`; it never synchronizes the
host. ``kernel_solve.solve(device, y, w, orient, transpose=False)`` is picked up
by :func:`bind` when that module exists.

Small limits in tests: ``monkeypatch.setattr(emulate_backend.device,
"max_shared_memory_per_block_optin", 4096)`` (or ``max_threads_per_block``,
``index64``), or a fresh ``EmulatorDevice(...)`` passed to the primitive.
"""

from __future__ import annotations

import functools
import importlib

import numpy as np

from ..kernel_source import INDEX_SCALARS

INT32_MAX = 2**31 - 1


def index_type(device, *extents) -> str:
    """``"int32"`` when every extent (an element count or the largest offset a
    kernel forms, grid-stride overshoot included) fits in 32 bits, else ``"int64"``."""
    return "int64" if device.index64 or max(extents) > INT32_MAX else "int32"


def index_scalar(index: str, value):
    """``value`` as the NumPy scalar type of ``ic_index`` for ``index``."""
    return INDEX_SCALARS[index](value)


def dtype_name(a) -> str:
    """``"float32"`` or ``"float64"``: the dtype key of the kernel sources."""
    return np.dtype(a.dtype).name


def launch(device, family, entry, dtype, index, grid, block, args, shared_mem=0):
    """Launch ``entry`` of ``family`` on the current stream, raising the function's
    dynamic shared memory limit when ``shared_mem`` needs more than the default.

    Raises ``ValueError`` naming the kernel when ``shared_mem`` exceeds what the
    device allows at all.
    """
    fn = device.function(family, entry, dtype, index)
    if shared_mem > device.max_shared_memory_per_block:   # only then query the function (a driver call)
        if shared_mem > device.max_shared_memory_per_block_optin:
            raise ValueError(
                f"{family}.{entry} needs {shared_mem} bytes of shared memory per block; "
                f"this device allows at most {device.max_shared_memory_per_block_optin}"
            )
        if shared_mem > fn.max_dynamic_shared_size_bytes:
            fn.max_dynamic_shared_size_bytes = shared_mem
    fn(grid, block, args, shared_mem=shared_mem)


def contiguous(device, a):
    """``a`` itself when C-contiguous, else a C-contiguous copy."""
    return device.xp.ascontiguousarray(a)


def _solve_unavailable(device_name):
    def solve(y, w, orient, transpose=False):
        raise NotImplementedError(
            f"backend {device_name!r} has no solve kernel in this build "
            "(invconv_cupy/backends/kernel_solve.py is missing); use backend='numpy' for CPU data"
        )

    return solve


def bind(device):
    """The backend primitives ``(conv, solve, weight_grad)`` running on ``device``."""
    from . import kernel_conv

    try:
        kernel_solve = importlib.import_module(".kernel_solve", __package__)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.kernel_solve":
            raise
        solve = _solve_unavailable(device.name)
    else:
        solve = functools.partial(kernel_solve.solve, device)
    return (functools.partial(kernel_conv.conv, device), solve,
            functools.partial(kernel_conv.weight_grad, device))
