"""Compile every kernel entry point with NVRTC, no GPU needed.

``python -m invconv_cupy.check_kernels [--arch 80 90 ...]`` compiles each kernel
family (``kernels/*.cu``) for every dtype and index type to PTX for each
architecture, calling NVRTC directly (CuPy's own compile path asks the driver
for the architecture, and there may be no driver). It prints one line per entry
point x dtype x index type x architecture, prints the compiler log of any
failure, and exits non-zero if anything failed (an entry point missing from the
PTX counts as a failure).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import sys

from . import kernel_source
from .cuda_device import COMPILE_OPTIONS

DEFAULT_ARCHS = (80, 90)


def _nvrtc():
    """CuPy's NVRTC binding, loading ``libnvrtc`` from the ``nvidia-cuda-nvrtc`` wheel when
    CuPy's own search misses it (e.g. site-packages shared through a ``.pth`` file)."""
    from cupy.cuda import nvrtc

    try:
        nvrtc.getVersion()
    except Exception:
        import nvidia

        for root in nvidia.__path__:
            for sub in ("cu13/lib", "cuda_nvrtc/lib", "cu12/lib"):
                for name in ("libnvrtc.so.13", "libnvrtc.so.12"):
                    path = os.path.join(root, sub, name)
                    if os.path.exists(path):
                        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        nvrtc.getVersion()
    return nvrtc


def compile_ptx(nvrtc, source: str, name: str, arch: int) -> tuple[bool, str, str]:
    """Compile ``source`` to PTX for ``compute_<arch>``: (ok, ptx, log)."""
    program = nvrtc.createProgram(source, name, (), ())
    try:
        try:
            nvrtc.compileProgram(program, (f"--gpu-architecture=compute_{arch}", "-ftz=true", *COMPILE_OPTIONS))
            ok = True
        except nvrtc.NVRTCError:
            ok = False
        log = nvrtc.getProgramLog(program)
        ptx = nvrtc.getPTX(program) if ok else ""
    finally:
        nvrtc.destroyProgram(program)
    if isinstance(ptx, bytes):
        ptx = ptx.decode(errors="replace")
    return ok, ptx, log


def check(archs=DEFAULT_ARCHS, out=sys.stdout) -> int:
    """Compile everything; return the number of failures."""
    nvrtc = _nvrtc()
    version = ".".join(map(str, nvrtc.getVersion()))
    print(f"NVRTC {version}; families: {', '.join(kernel_source.families())}", file=out)
    failures = 0
    for family in kernel_source.families():
        entries = kernel_source.entry_points(family)
        if not entries:
            print(f"FAIL {family}: no entry points (extern \"C\" __global__ void ...)", file=out)
            failures += 1
        for dtype in kernel_source.REAL_TYPES:
            for index in kernel_source.INDEX_TYPES:
                source = kernel_source.source(family, dtype, index)
                for arch in archs:
                    ok, ptx, log = compile_ptx(nvrtc, source, f"{family}.cu", arch)
                    for entry in entries:
                        found = ok and re.search(rf"\.entry\s+{re.escape(entry)}\s*\(", ptx) is not None
                        status = "ok  " if found else "FAIL"
                        failures += not found
                        print(f"{status} {family}.{entry} {dtype} {index} sm_{arch}", file=out)
                    if not ok or log.strip():
                        print(f"--- NVRTC log, {family}.cu {dtype} {index} sm_{arch} ---\n{log}", file=out)
    print(f"{failures} failure(s)", file=out)
    return failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m invconv_cupy.check_kernels", description=__doc__.split("\n")[0])
    parser.add_argument("--arch", type=int, nargs="+", default=list(DEFAULT_ARCHS),
                        help="compute capabilities, e.g. 80 90 (default: %(default)s)")
    parser.add_argument("--resources", action="store_true",
                        help="compile to cubins and print registers, spills, local and shared memory per entry "
                             "point, and the occupancy of the headline case's launches")
    args = parser.parse_args(argv)
    if args.resources:
        from . import kernel_resources

        return 1 if kernel_resources.print_report(args.arch, sys.stdout) else 0
    return 1 if check(args.arch) else 0


if __name__ == "__main__":
    sys.exit(main())
