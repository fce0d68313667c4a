"""The kernel emulator: ``kernels/*.cu`` compiled for the CPU and launched like CUDA kernels.

:class:`EmulatorDevice` is the ``emulate`` backend's device (see
:mod:`invconv_cupy.backends.kernel_launch` for the device interface). It runs
the real kernel text with CUDA's execution model (``kernels/cuda_shim.h``, implemented
by ``kernels/cuda_shim_runtime.cpp``, compiled once and linked into every kernel library):

- **Blocks run concurrently**, ``concurrent_blocks`` at a time (worker OS
  threads, default 4; the first wave starts together), taken in a shuffled
  order, so blocks may wait on each other's flags as long as the kernel makes
  progress with any number of resident blocks, as CUDA requires. Static
  ``__shared__`` arrays are per block; dynamic shared memory is filled with
  0xFF bytes (NaN) before every block.
- **Threads are fibers** of their block's worker: a thread runs until a
  built-in waits (a barrier, a warp intrinsic, a spinning flag load), then a
  random waiting-free thread of the block runs (the seed fixes every block's
  schedule). ``__syncthreads()`` is a real barrier (threads that returned
  leave it).
- **Warps** of 32 threads with ``__shfl*_sync``, ``__ballot_sync``,
  ``__any_sync``/``__all_sync``, ``__syncwarp`` and ``__activemask``. Using
  them against CUDA's rules is an error: a calling lane outside its mask,
  lanes of one mask at different intrinsics, call sites or masks, a named lane
  waiting in ``__syncthreads``. A lane that reads a lane not taking part gets
  NaN bits (undefined on a GPU).
- **Memory order** as on a GPU: relaxed atomics, ``__threadfence()``, and the
  flag accesses ``ic_load_acquire``/``ic_store_release`` (``common.cuh``).
- **Checks**: every typed access, atomic and flag access is checked for alignment
  (a misaligned ``float4``/``double2`` load or ``atomicAdd`` is an error), and a **watchdog** stops a launch in
  which no block progresses for ``watchdog`` seconds while all wait or spin in
  built-ins, reporting where every block's threads are.
- **Race mode** (``race=True``): threads also switch at random at every
  built-in, and workers yield their core and sleep at random, so a missing
  barrier, warp sync or flag wait gives wrong results. A missing fence changes
  nothing on an x86 CPU; ``sanitize="thread"`` (ThreadSanitizer) reports it,
  and any other race, as a data race whatever the timing.

A fault in a kernel raises :class:`EmulatedKernelError` naming the kernel, block,
thread and source line. Launches a GPU refuses raise :class:`EmulatedLaunchError`:
too many threads per block, a grid or block dimension out of range, more dynamic
shared memory than the function's ``max_dynamic_shared_size_bytes`` (48 KiB unless
raised, at most the device's opt-in limit). It is stricter than CuPy where CuPy
would silently compute garbage: arguments must match the kernel's parameter types
(NumPy fixed-width scalars, C-contiguous arrays of the pointee's item size), and
fresh outputs from :meth:`EmulatorDevice.empty` are filled with NaN so an element
no kernel writes shows up.

Environment (defaults for :class:`EmulatorDevice`): ``INVCONV_EMULATE_SANITIZE``
(``address`` or ``thread``: start Python with ``LD_PRELOAD`` of the runtime,
:func:`sanitizer_runtime`, and for AddressSanitizer ``ASAN_OPTIONS=detect_leaks=0``),
``INVCONV_EMULATE_SEED``, ``INVCONV_EMULATE_RACE=1``, ``INVCONV_EMULATE_BLOCKS``,
``INVCONV_EMULATE_WATCHDOG`` (seconds).
"""

from __future__ import annotations

import ctypes
import os
import threading

import numpy as np

from .. import kernel_source
from .build import KernelCompileError, asan_runtime, build, cache_dir, emulator_source, sanitizer_runtime
from .environment import (blocks_from_env, checked_blocks, checked_race, checked_sanitize, checked_seed,
                          checked_watchdog, race_from_env, sanitize_from_env, seed_from_env, watchdog_from_env)

__all__ = ["EmulatorDevice", "EmulatedFunction", "EmulatedLaunchError", "EmulatedKernelError", "KernelCompileError",
           "asan_runtime", "sanitizer_runtime", "cache_dir"]

# Launches run one at a time per process, in call order (like kernels on one stream);
# running several at once would only share the same cores.
_LAUNCH_LOCK = threading.Lock()
_RACE_MODE = 1                # Launch::flags bit 0 in cuda_shim_runtime.cpp
_ERROR_BYTES = 16384


class EmulatedLaunchError(RuntimeError):
    """A launch the GPU would refuse (``CUDA_ERROR_INVALID_VALUE`` on a device)."""


class EmulatedKernelError(RuntimeError):
    """A kernel fault caught while it ran: a misaligned access, a warp intrinsic used against
    its rules, a deadlock, ``__trap()``, or a block that stopped progressing (the watchdog).
    On a GPU these fault, hang or silently compute garbage."""


class EmulatedFunction:
    """One kernel entry point of a compiled family; called like ``cupy.RawKernel``.

    ``fn(grid, block, args, shared_mem=0)``: ``grid`` and ``block`` are tuples
    of up to three ints, ``args`` a tuple of C-contiguous NumPy arrays and
    fixed-width NumPy scalars.
    """

    def __init__(self, device, library, name):
        self._device = device
        self._launch = getattr(library, f"ic_launch_{name}")
        self._launch.restype = ctypes.c_int
        self._launch.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t)
        signature = getattr(library, f"ic_signature_{name}")
        signature.restype = ctypes.c_char_p
        self.signature = tuple(signature().decode().split(",")) if signature() else ()
        self.name = name
        self._max_dynamic_shared = device.max_shared_memory_per_block

    @property
    def max_dynamic_shared_size_bytes(self) -> int:
        """Dynamic shared memory this function may use per block; can be raised up to the opt-in limit."""
        return self._max_dynamic_shared

    @max_dynamic_shared_size_bytes.setter
    def max_dynamic_shared_size_bytes(self, value):
        limit = self._device.max_shared_memory_per_block_optin
        if not 0 <= int(value) <= limit:
            raise EmulatedLaunchError(
                f"{self.name}: max_dynamic_shared_size_bytes={value} is outside [0, {limit}] "
                "(the device's opt-in shared memory per block)"
            )
        self._max_dynamic_shared = int(value)

    def _check_geometry(self, grid, block, shared_mem):
        grid, block = _dims("grid", grid), _dims("block", block)
        threads = block[0] * block[1] * block[2]
        limit = self._device.max_threads_per_block
        problems = []
        if threads > limit:
            problems.append(f"a block of {threads} threads exceeds the device's {limit} threads per block")
        if block[0] > 1024 or block[1] > 1024 or block[2] > 64:
            problems.append(f"block {block} exceeds (1024, 1024, 64)")
        if grid[0] > 2**31 - 1 or grid[1] > 65535 or grid[2] > 65535:
            problems.append(f"grid {grid} exceeds (2**31 - 1, 65535, 65535)")
        if shared_mem > self._max_dynamic_shared:
            problems.append(
                f"{shared_mem} bytes of dynamic shared memory exceed this function's "
                f"max_dynamic_shared_size_bytes={self._max_dynamic_shared}"
            )
        if problems:
            raise EmulatedLaunchError(f"{self.name}: launch refused: " + "; ".join(problems))
        return grid, block

    def _pack(self, args):
        if len(args) != len(self.signature):
            raise TypeError(f"{self.name} takes {len(self.signature)} arguments, got {len(args)}")
        holders = []
        for position, (code, arg) in enumerate(zip(self.signature, args)):
            kind, size = code[0], int(code[1:])
            where = f"{self.name} argument {position}"
            if kind == "P":
                if not isinstance(arg, np.ndarray) or not arg.flags.c_contiguous or arg.itemsize != size:
                    raise TypeError(f"{where} must be a C-contiguous array of {size}-byte items, got {_describe(arg)}")
                holders.append(np.array(arg.ctypes.data, dtype=np.uintp))
            elif kind in "IF":
                wanted = np.integer if kind == "I" else np.floating
                if not isinstance(arg, wanted) or arg.itemsize != size:
                    raise TypeError(
                        f"{where} must be a {size}-byte NumPy {wanted.__name__} scalar "
                        f"(kernels take fixed-width scalars), got {_describe(arg)}"
                    )
                holders.append(np.array(arg))
            else:
                raise TypeError(f"{where}: the emulator cannot pass a parameter of this C type")
        params = (ctypes.c_void_p * max(len(holders), 1))(*[h.ctypes.data for h in holders])
        return params, holders

    def __call__(self, grid, block, args, shared_mem=0):
        grid, block = self._check_geometry(grid, block, int(shared_mem))
        params, holders = self._pack(tuple(args))  # noqa: F841
        device = self._device
        seed = device.seed if device.seed is not None else int.from_bytes(os.urandom(8), "little")
        settings = (_RACE_MODE if device.race else 0, device.concurrent_blocks, round(device.watchdog * 1000))
        launch = (ctypes.c_uint64 * 11)(*grid, *block, int(shared_mem), seed, *settings)
        error = ctypes.create_string_buffer(_ERROR_BYTES)
        with _LAUNCH_LOCK:
            failed = self._launch(launch, params, error, _ERROR_BYTES)  # `holders` keeps the arguments alive
        if failed:
            raise EmulatedKernelError(error.value.decode(errors="replace"))


def _dims(what, dims):
    dims = (dims,) if isinstance(dims, (int, np.integer)) else tuple(dims)
    if not 1 <= len(dims) <= 3 or any(int(d) < 1 for d in dims):
        raise EmulatedLaunchError(f"{what} must be 1 to 3 positive extents, got {dims}")
    return tuple(int(d) for d in dims) + (1,) * (3 - len(dims))


def _describe(arg):
    if isinstance(arg, np.ndarray):
        return f"an array of dtype {arg.dtype}, C-contiguous={arg.flags.c_contiguous}"
    return f"{type(arg).__name__} {arg!r}"


class EmulatorDevice:
    """The emulated GPU: kernel functions, array allocation and device limits.

    Parameters
    ----------
    max_threads_per_block, max_shared_memory_per_block, max_shared_memory_per_block_optin : int
        The device limits (defaults: an H100/H200). Lower them to exercise the
        small-resource paths of a primitive in tests.
    transform : callable, optional
        ``transform(family, source) -> source`` applied to each family's source
        before compiling (tests use it to run deliberately broken kernels).
    sanitize : {None, "address", "thread"}
        Build with AddressSanitizer or ThreadSanitizer (start Python with the
        runtime in ``LD_PRELOAD``, see :func:`sanitizer_runtime`); default from
        ``$INVCONV_EMULATE_SANITIZE``.
    seed : int, optional
        Fixes the block order and every block's thread schedule; default from
        ``$INVCONV_EMULATE_SEED``, else random per launch.
    race : bool, optional
        Race mode: threads also switch at random at every built-in call and workers
        sleep at random, to expose missing barriers, warp syncs and flag waits;
        default from ``$INVCONV_EMULATE_RACE`` (``1``), else off.
    concurrent_blocks : int, optional
        Blocks running at once (worker OS threads); default from
        ``$INVCONV_EMULATE_BLOCKS``, else 4.
    watchdog : float, optional
        Seconds without progress in any block (while all wait or spin in built-ins)
        after which a launch stops with :class:`EmulatedKernelError`; default from
        ``$INVCONV_EMULATE_WATCHDOG``, else 20.
    """

    name = "emulate"
    xp = np

    def __init__(self, *, max_threads_per_block=1024, max_shared_memory_per_block=48 * 1024,
                 max_shared_memory_per_block_optin=227 * 1024, transform=None, sanitize=None, seed=None,
                 race=None, concurrent_blocks=None, watchdog=None):
        self.max_threads_per_block = max_threads_per_block
        self.max_shared_memory_per_block = max_shared_memory_per_block
        self.max_shared_memory_per_block_optin = max_shared_memory_per_block_optin
        #: use the 64-bit index variants whatever the sizes (tests of the int64 path)
        self.index64 = False
        self.transform = transform
        self.sanitize = checked_sanitize("sanitize", sanitize) if sanitize is not None else sanitize_from_env()
        self.seed = checked_seed("seed", seed) if seed is not None else seed_from_env()
        self.race = checked_race("race", race) if race is not None else race_from_env()
        self.concurrent_blocks = (checked_blocks("concurrent_blocks", concurrent_blocks)
                                  if concurrent_blocks is not None else blocks_from_env())
        self.watchdog = checked_watchdog("watchdog", watchdog) if watchdog is not None else watchdog_from_env()
        self._libraries = {}
        self._functions = {}

    def empty(self, shape, dtype):
        """A fresh array filled with NaN, so an element that no kernel writes fails the tests."""
        return np.full(shape, np.nan, dtype=dtype)

    def _library(self, family, dtype, index):
        """(ctypes library, entry points) of ``family`` for ``dtype`` and ``index``."""
        key = (family, dtype, index)
        if key not in self._libraries:
            text = kernel_source.source(family, dtype, index)
            if self.transform is not None:
                text = self.transform(family, text)
            entries = kernel_source.find_entry_points(text)
            path = build(emulator_source(text, entries), self.sanitize)
            try:
                library = ctypes.CDLL(str(path))
            except OSError as exc:
                if self.sanitize is None:
                    raise
                raise KernelCompileError(
                    f"a kernel built with sanitize={self.sanitize!r} loads only into a process started with "
                    f"LD_PRELOAD={sanitizer_runtime(self.sanitize)} ({exc})") from exc
            self._libraries[key] = library, entries
        return self._libraries[key]

    def function(self, family, entry, dtype, index):
        """The entry point ``entry`` of ``family`` compiled for ``dtype`` and ``index``."""
        key = (family, entry, dtype, index)
        if key not in self._functions:
            library, entries = self._library(family, dtype, index)
            if entry not in entries:
                raise ValueError(f"kernels/{family}.cu has no entry point {entry!r}; it has {', '.join(entries)}")
            self._functions[key] = EmulatedFunction(self, library, entry)
        return self._functions[key]
