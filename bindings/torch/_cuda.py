"""Run CuPy work for torch CUDA tensors the way torch would: its device, its stream, its allocator.

Inside :func:`torch_launch_context`:

- CuPy's current device is the tensors' device;
- CuPy's current stream is torch's current stream on that device, so kernels
  are ordered with torch's own work, follow ``torch.cuda.stream(...)`` blocks
  and are recorded by CUDA-graph capture;
- every CuPy allocation (outputs and temporaries) comes from torch's caching
  allocator on that stream, so memory is shared with torch, counted by
  ``torch.cuda.memory_allocated``, and drawn from a graph's private pool while
  it is being captured.

Nothing here synchronizes with the host.

Results reach torch through DLPack, so their storage is owned by the CuPy
array (itself holding torch's allocation) rather than by a torch storage:
``Tensor.record_stream`` does nothing for them. To use a result on another
stream, order the streams (``wait_stream``) before it is freed.
"""

from __future__ import annotations

import contextlib
import functools

import torch


def _torch_malloc(size: int, device_id: int) -> int:
    if size == 0:
        return 0
    return torch.cuda.caching_allocator_alloc(size, device_id, torch.cuda.current_stream(device_id))


def _torch_free(ptr: int, device_id: int) -> None:
    if ptr:
        torch.cuda.caching_allocator_delete(ptr)


@functools.cache
def _torch_allocator():
    """CuPy allocator (a ``malloc(size)`` callable) backed by torch's caching allocator."""
    import cupy

    return cupy.cuda.memory.PythonFunctionAllocator(_torch_malloc, _torch_free).malloc


class _StreamHandle:
    """A raw ``cudaStream_t`` in the CUDA stream protocol, whatever torch's version."""

    def __init__(self, ptr: int):
        self.ptr = ptr

    def __cuda_stream__(self):
        return (0, self.ptr)


def _cupy_stream(cupy, ptr: int, device_id: int):
    """CuPy's view of the stream ``ptr`` (``Stream.from_external`` since CuPy 14)."""
    if hasattr(cupy.cuda.Stream, "from_external"):
        return cupy.cuda.Stream.from_external(_StreamHandle(ptr))
    return cupy.cuda.ExternalStream(ptr, device_id)


@contextlib.contextmanager
def torch_launch_context(device: torch.device):
    """Make CuPy use ``device``, torch's current stream there and torch's allocator.

    A no-op for CPU devices.
    """
    if device.type != "cuda":
        yield
        return
    import cupy

    index = device.index if device.index is not None else torch.cuda.current_device()
    ptr = torch.cuda.current_stream(index).cuda_stream
    with cupy.cuda.Device(index), _cupy_stream(cupy, ptr, index), cupy.cuda.using_allocator(_torch_allocator()):
        yield
