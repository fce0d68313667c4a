"""The ``cupy`` backend's device: kernels as ``cupy.RawModule``, limits of the current GPU.

One ``RawModule`` per (kernel family, dtype, index type, device), memoized with
``cupy.memoize(for_each_device=True)``; launches go on the current CuPy stream.
See :mod:`invconv_cupy.backends.kernel_launch` for the device interface.
"""

from __future__ import annotations

import cupy
from cupy.cuda import runtime

from . import kernel_source

# CuPy adds the architecture of the current device and -ftz=true itself;
# check_kernels compiles with these options too.
COMPILE_OPTIONS = ("-std=c++17",)


@cupy.memoize(for_each_device=True)
def _module(family: str, dtype: str, index: str) -> cupy.RawModule:
    return cupy.RawModule(code=kernel_source.source(family, dtype, index), options=COMPILE_OPTIONS)


@cupy.memoize(for_each_device=True)
def _function(family: str, entry: str, dtype: str, index: str):
    return _module(family, dtype, index).get_function(entry)


@cupy.memoize(for_each_device=True)
def _attribute(attribute: int) -> int:
    return runtime.deviceGetAttribute(attribute, cupy.cuda.Device().id)


class CupyDevice:
    """The current CUDA device, seen through CuPy."""

    name = "cupy"
    xp = cupy
    #: use the 64-bit index variants whatever the sizes (tests of the int64 path)
    index64 = False

    def empty(self, shape, dtype):
        return cupy.empty(shape, dtype)

    def function(self, family, entry, dtype, index):
        """The entry point ``entry`` of ``family`` compiled for ``dtype`` and ``index`` (a ``RawKernel``)."""
        return _function(family, entry, dtype, index)

    @property
    def max_threads_per_block(self) -> int:
        return _attribute(runtime.cudaDevAttrMaxThreadsPerBlock)

    @property
    def max_shared_memory_per_block(self) -> int:
        return _attribute(runtime.cudaDevAttrMaxSharedMemoryPerBlock)

    @property
    def max_shared_memory_per_block_optin(self) -> int:
        return _attribute(runtime.cudaDevAttrMaxSharedMemoryPerBlockOptin)

    @property
    def multiprocessor_count(self) -> int:
        """SMs of the current device (sizes persistent grids; other devices may lack it)."""
        return _attribute(runtime.cudaDevAttrMultiProcessorCount)
