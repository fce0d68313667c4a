"""What each kernel entry point costs a multiprocessor, measured offline (NVRTC, no GPU).

:func:`collect` compiles every kernel family for every dtype and index type to a
cubin for each architecture, with ``--ptxas-options=-v``, and reads from ptxas's
report, per entry point: registers per thread, spill stores and loads, local
memory (the stack frame) and static shared memory. :func:`offenders` lists the
entry points in :data:`NO_SPILL_PREFIXES` that spill or use local memory.

:func:`occupancy` turns those numbers and a launch (threads per block, dynamic
shared memory) into resident blocks per multiprocessor and the limit that binds,
following the rules of CUDA's occupancy calculator (``cuda_occupancy.h``) with
the default shared-memory carveout; :data:`LIMITS` holds the per-architecture
numbers (A100 for sm_80, H100/H200 for sm_90). :func:`case_launches` records the
launches our primitives make for a case without running anything, so the
occupancy table always follows the real launch configuration.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import re
from dataclasses import dataclass

import numpy as np

from . import kernel_source
from .cuda_device import COMPILE_OPTIONS

#: entry points whose names start with these must not spill or use local memory
NO_SPILL_PREFIXES = ("solve_", "conv_", "wgrad_")


@dataclass(frozen=True)
class EntryResources:
    """ptxas's report for one entry point compiled for one (dtype, index type, architecture)."""

    family: str
    entry: str
    dtype: str
    index: str
    arch: int
    registers: int
    spill_stores: int       # bytes
    spill_loads: int        # bytes
    local_bytes: int        # per thread: the stack frame (local memory), or ptxas's "lmem" where it reports one
    static_shared: int      # bytes per block, __shared__ arrays (dynamic shared memory comes with the launch)
    barriers: int

    @property
    def spills(self) -> bool:
        return self.spill_stores > 0 or self.spill_loads > 0


_COMPILING = re.compile(r"Compiling entry function '(\w+)' for 'sm_(\d+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_BYTES = re.compile(r"(\d+) bytes (smem|lmem)\b")
_BARRIERS = re.compile(r"used (\d+) barriers")


def parse_ptxas_log(log: str) -> dict[str, dict[str, int]]:
    """ptxas ``-v`` lines -> ``{entry: {registers, spill_stores, spill_loads, local_bytes, static_shared, barriers}}``."""
    found, current = {}, None
    for line in log.splitlines():
        if m := _COMPILING.search(line):
            current = found.setdefault(m.group(1), {"registers": 0, "spill_stores": 0, "spill_loads": 0,
                                                    "local_bytes": 0, "static_shared": 0, "barriers": 0})
            continue
        if current is None:
            continue
        if m := _FRAME.search(line):
            current["local_bytes"] = max(current["local_bytes"], int(m.group(1)))
            current["spill_stores"], current["spill_loads"] = int(m.group(2)), int(m.group(3))
        if m := _USED.search(line):
            current["registers"] = int(m.group(1))
            for size, kind in _BYTES.findall(line):
                key = "static_shared" if kind == "smem" else "local_bytes"
                current[key] = max(current[key], int(size))
            if b := _BARRIERS.search(line):
                current["barriers"] = int(b.group(1))
    return found


def compile_resources(nvrtc, source: str, name: str, arch: int) -> tuple[bool, dict, str]:
    """Compile ``source`` to a cubin for ``sm_<arch>`` with ptxas's report: ``(ok, parsed report, log)``."""
    program = nvrtc.createProgram(source, name, (), ())
    try:
        try:
            nvrtc.compileProgram(program, (f"--gpu-architecture=sm_{arch}", "-ftz=true", "--ptxas-options=-v",
                                           *COMPILE_OPTIONS))
            ok = True
        except nvrtc.NVRTCError:
            ok = False
        log = nvrtc.getProgramLog(program)
    finally:
        nvrtc.destroyProgram(program)
    return ok, (parse_ptxas_log(log) if ok else {}), log


@functools.cache
def collect(archs=(80, 90), dtypes=tuple(kernel_source.REAL_TYPES), indexes=tuple(kernel_source.INDEX_TYPES),
            workers=None) -> tuple[tuple[EntryResources, ...], tuple[str, ...]]:
    """Every entry point of every family for each dtype, index type and architecture.

    Compiles on ``workers`` threads (NVRTC releases the GIL; default: one per CPU).
    Returns ``(resources, failures)``; a failure is a message with the compiler log,
    for a program that did not compile or an entry point missing from the report.
    """
    from .check_kernels import _nvrtc

    nvrtc = _nvrtc()
    jobs = [(family, dtype, index, arch) for family in kernel_source.families() for dtype in dtypes
            for index in indexes for arch in archs]

    def run(job):
        family, dtype, index, arch = job
        return job, compile_resources(nvrtc, kernel_source.source(family, dtype, index), f"{family}.cu", arch)

    resources, failures = [], []
    with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        for (family, dtype, index, arch), (ok, report, log) in pool.map(run, jobs):
            where = f"{family}.cu {dtype} {index} sm_{arch}"
            if not ok:
                failures.append(f"{where}: did not compile\n{log}")
                continue
            for entry in kernel_source.entry_points(family):
                if entry not in report:
                    failures.append(f"{where}: no ptxas report for {entry}\n{log}")
                    continue
                resources.append(EntryResources(family, entry, dtype, index, arch, **report[entry]))
    return tuple(resources), tuple(failures)


def offenders(resources) -> list[EntryResources]:
    """The entries named with :data:`NO_SPILL_PREFIXES` that spill or use local memory."""
    return [r for r in resources if r.entry.startswith(NO_SPILL_PREFIXES) and (r.spills or r.local_bytes > 0)]


@dataclass(frozen=True)
class DeviceLimits:
    """Per-multiprocessor limits of one GPU (CUDA occupancy calculator's terms)."""

    name: str
    arch: int
    multiprocessors: int
    shared_per_sm: int                  # bytes, at the largest carveout
    shared_per_block_optin: int         # bytes a block may use after raising its limit
    shared_per_block: int = 48 * 1024   # without opt-in
    reserved_shared_per_block: int = 1024
    shared_granularity: int = 128
    max_threads_per_sm: int = 2048
    max_threads_per_block: int = 1024
    max_blocks_per_sm: int = 32
    registers_per_sm: int = 65536
    registers_per_block: int = 65536
    max_registers_per_thread: int = 255
    register_granularity: int = 256     # registers, per warp
    sub_partitions: int = 4
    warp_size: int = 32


LIMITS = {
    80: DeviceLimits("A100", 80, multiprocessors=108, shared_per_sm=164 * 1024, shared_per_block_optin=163 * 1024),
    90: DeviceLimits("H100/H200", 90, multiprocessors=132, shared_per_sm=228 * 1024,
                     shared_per_block_optin=227 * 1024),
}


@dataclass(frozen=True)
class Occupancy:
    """Resident blocks per multiprocessor allowed by each resource, and the result."""

    by_threads: int
    by_registers: int
    by_shared: int
    by_blocks: int
    blocks: int
    warps: int           # resident warps per multiprocessor
    fraction: float      # warps / the multiprocessor's maximum

    @property
    def binds(self) -> tuple[str, ...]:
        """The limits that set :attr:`blocks` (several when they tie)."""
        limits = {"threads": self.by_threads, "registers": self.by_registers, "shared memory": self.by_shared,
                  "blocks": self.by_blocks}
        return tuple(name for name, value in limits.items() if value == self.blocks)


def _round_up(value, unit):
    return -(-value // unit) * unit


def occupancy(res: EntryResources, threads: int, dynamic_shared: int, limits: DeviceLimits) -> Occupancy:
    """Blocks of ``threads`` threads and ``dynamic_shared`` bytes of dynamic shared memory that fit
    one multiprocessor of ``limits`` at once (0 when the launch cannot run at all)."""
    warps = -(-threads // limits.warp_size)
    fits = threads <= limits.max_threads_per_block
    by_threads = limits.max_threads_per_sm // limits.warp_size // warps if fits else 0
    regs_per_warp = _round_up(res.registers * limits.warp_size, limits.register_granularity)
    if (res.registers > limits.max_registers_per_thread
            or regs_per_warp * _round_up(warps, limits.sub_partitions) > limits.registers_per_block):
        by_registers = 0
    elif regs_per_warp == 0:
        by_registers = limits.max_blocks_per_sm
    else:
        per_partition = limits.registers_per_sm // limits.sub_partitions // regs_per_warp
        by_registers = per_partition * limits.sub_partitions // warps
    shared = _round_up(res.static_shared + dynamic_shared + limits.reserved_shared_per_block,
                       limits.shared_granularity)
    if res.static_shared + dynamic_shared > limits.shared_per_block_optin:
        by_shared = 0
    else:
        by_shared = limits.shared_per_sm // shared
    blocks = min(by_threads, by_registers, by_shared, limits.max_blocks_per_sm)
    resident = blocks * warps
    return Occupancy(by_threads, by_registers, by_shared, limits.max_blocks_per_sm, blocks, resident,
                     resident / (limits.max_threads_per_sm // limits.warp_size))


@dataclass(frozen=True)
class Launch:
    """One kernel launch a primitive makes."""

    operation: str
    family: str
    entry: str
    dtype: str
    index: str
    grid: tuple
    block: tuple
    shared_mem: int

    @property
    def threads(self) -> int:
        return int(np.prod(self.block))

    @property
    def blocks(self) -> int:
        return int(np.prod(self.grid))


class _RecordingFunction:
    def __init__(self, device, family, entry, dtype, index):
        self._device, self._key = device, (family, entry, dtype, index)
        self.max_dynamic_shared_size_bytes = device.max_shared_memory_per_block

    def __call__(self, grid, block, args, shared_mem=0):
        self._device.launches.append(Launch(self._device.operation, *self._key, tuple(grid), tuple(block),
                                            int(shared_mem)))


class RecordingDevice:
    """A kernel device (see :mod:`invconv_cupy.backends.kernel_launch`) with the limits of
    ``limits`` that records each launch instead of running it."""

    name = "record"
    xp = np
    index64 = False

    def __init__(self, limits: DeviceLimits):
        self.max_threads_per_block = limits.max_threads_per_block
        self.max_shared_memory_per_block = limits.shared_per_block
        self.max_shared_memory_per_block_optin = limits.shared_per_block_optin
        self.launches: list[Launch] = []
        self.operation = ""

    def empty(self, shape, dtype):
        return np.empty(shape, dtype)

    def function(self, family, entry, dtype, index):
        return _RecordingFunction(self, family, entry, dtype, index)


def case_launches(shape, kernel_size, dtype, limits: DeviceLimits) -> list[Launch]:
    """The launches of ``conv``, ``conv_vjp``, ``solve`` and ``solve_vjp`` (orientation TL) on
    images ``shape`` with a ``kernel_size`` kernel, as the kernel primitives make them on a
    device with ``limits``. Nothing runs: the arrays are uninitialized."""
    from .backends import kernel_conv, kernel_solve
    from .orientation import parse_orientation

    device, tl = RecordingDevice(limits), parse_orientation("TL")
    x = np.empty(shape, dtype)
    w = np.empty((shape[1], shape[1], *kernel_size), dtype)
    operations = {
        "conv": lambda: kernel_conv.conv(device, x, w, tl),
        "conv_vjp": lambda: (kernel_conv.conv(device, x, w, tl, transpose=True),
                             kernel_conv.weight_grad(device, x, x, kernel_size, tl)),
        "solve": lambda: kernel_solve.solve(device, x, w, tl),
        "solve_vjp": lambda: (kernel_solve.solve(device, x, w, tl, transpose=True),
                              kernel_conv.weight_grad(device, x, x, kernel_size, tl, scale=-1.0)),
    }
    for name, run in operations.items():
        device.operation = name
        run()
    return device.launches


#: the benchmark's headline case: images (B, C, H, W), kernel size, dtype
HEADLINE = ((100, 12, 32, 32), (3, 3), "float32")


def print_report(archs, out, case=HEADLINE) -> int:
    """Print the resource table of every entry point and, per architecture in :data:`LIMITS`, the
    occupancy of each launch of ``case``. Returns the number of problems (compile failures,
    entries in :data:`NO_SPILL_PREFIXES` that spill or use local memory)."""
    resources, failures = collect(tuple(archs))
    bad = set(offenders(resources))
    print("ptxas resources per entry point (NVRTC, cubin, -ftz=true): registers per thread; spill stores/loads, "
          "local memory (stack frame) per thread and static shared memory per block, in bytes", file=out)
    print(f"{'':4} {'entry':36} {'dtype':7} {'index':5} {'arch':5} {'regs':>4} {'spill st':>8} {'spill ld':>8} "
          f"{'local':>5} {'static smem':>11}", file=out)
    for r in sorted(resources, key=lambda r: (r.family, r.entry, r.dtype, r.index, r.arch)):
        flag = "FAIL" if r in bad else "ok"
        print(f"{flag:4} {r.family + '.' + r.entry:36} {r.dtype:7} {r.index:5} sm_{r.arch:<2} {r.registers:4d} "
              f"{r.spill_stores:8d} {r.spill_loads:8d} {r.local_bytes:5d} {r.static_shared:11d}", file=out)
    for message in failures:
        print(f"FAIL {message}", file=out)
    by_key = {(r.family, r.entry, r.dtype, r.index, r.arch): r for r in resources}
    shape, kernel_size, dtype = case
    for arch in archs:
        limits = LIMITS.get(arch)
        if limits is None:
            continue
        print(f"\n{'x'.join(map(str, shape))}, {kernel_size[0]}x{kernel_size[1]} kernel, {dtype} on {limits.name} "
              f"(sm_{arch}: {limits.multiprocessors} SMs, {limits.max_threads_per_sm} threads, "
              f"{limits.registers_per_sm} registers, {limits.shared_per_sm // 1024} KiB shared memory per SM); "
              "resident blocks per SM allowed by threads / registers / shared memory, and the limit that binds",
              file=out)
        print(f"{'operation':10} {'kernel':36} {'blocks':>6} {'threads':>7} {'dyn smem':>8} {'regs':>4} "
              f"{'by thr':>6} {'by reg':>6} {'by smem':>7} {'blocks/SM':>9} {'warps/SM':>8} {'waves':>5}  binds",
              file=out)
        for launch in case_launches(shape, kernel_size, dtype, limits):
            res = by_key.get((launch.family, launch.entry, launch.dtype, launch.index, arch))
            if res is None:
                print(f"{launch.operation:10} {launch.family + '.' + launch.entry:36} (not compiled)", file=out)
                continue
            occ = occupancy(res, launch.threads, launch.shared_mem, limits)
            waves = launch.blocks / max(1, occ.blocks * limits.multiprocessors)
            print(f"{launch.operation:10} {launch.family + '.' + launch.entry:36} {launch.blocks:6d} "
                  f"{launch.threads:7d} {launch.shared_mem:8d} {res.registers:4d} {occ.by_threads:6d} "
                  f"{occ.by_registers:6d} {occ.by_shared:7d} {occ.blocks:9d} {occ.warps:8d} {waves:5.2f}  "
                  f"{', '.join(occ.binds)}", file=out)
    problems = len(failures) + len(bad)
    print(f"\n{len(failures)} compile failure(s), {len(bad)} entry point(s) in {', '.join(NO_SPILL_PREFIXES)} "
          "with spills or local memory", file=out)
    return problems
