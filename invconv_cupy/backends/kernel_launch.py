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
  ``ic_grid_stride()``). Compute flat offsets in ``ic_index``.
- Parameters: pointers to ``ic_real``/integers, and scalars (``int``,
  ``ic_index``, ``ic_real``, ...); pass them from Python as C-contiguous arrays
  and fixed-width NumPy scalars (``np.int32``, ``INDEX_SCALARS[index]``,
  ``np.dtype(dtype).type``), never Python numbers. The emulator checks each
  argument against the kernel's parameter types.
- Dynamic shared memory: ``IC_DYNAMIC_SHARED(ic_real, tile);`` in the kernel body
  (a 16-byte aligned ``ic_real* tile``), sized by the launch's ``shared_mem``.
  Static ``__shared__`` arrays in a kernel body work too.
- Built-ins the emulator supports: ``threadIdx``/``blockIdx``/``blockDim``/``gridDim``,
  ``__syncthreads``, ``__threadfence``, ``atomicAdd`` (int, unsigned, unsigned
  long long, float, double), ``atomicSub``/``Exch``/``Min``/``Max``/``CAS`` on
  integers, ``__ldg``, ``min``/``max``, ``<cmath>`` functions. No warp intrinsics,
  cooperative groups, inline PTX or textures (see ``kernels/cuda_shim.h``).
  ``__syncthreads()`` after some threads of the block returned is allowed
  (returned threads leave the barrier, as on sm_70+).
- Check it: ``python -m invconv_cupy.check_kernels`` (NVRTC, no GPU needed) and
  the tests under ``backend="emulate"``.

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
