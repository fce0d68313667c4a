"""compute-sanitizer (memcheck, racecheck) over small cases of every kernel entry point.

    python bench/gpu_sanitize.py [--sanitizer PATH] [--tools memcheck racecheck] [--log FILE]
    python bench/gpu_sanitize.py --cases [--device cupy|emulate]

The first form finds compute-sanitizer (see :func:`find_sanitizer`) and runs
the second form under each tool. Exit status: 0 when every tool reports no
error, 1 when one does (or the cases fail), 75 when compute-sanitizer cannot
run on this machine (no device support), 76 when there is none.

``--cases`` runs every entry point of every kernel family at least once on
small, odd shapes (tiled and untiled convolutions, the weight gradient with
parameter groups, single-launch solves with 1 to 16 outputs per thread, linked
tiles published every diagonal or less often, 2 images per block, transposed,
step matrices in global memory, A^-1 by solve_invert, 64-bit indices), checks
each output against the NumPy path, and fails when an entry point was never
launched. On CuPy the memory pool is off, so every array is its own allocation
and memcheck sees an access past its end.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
#: where the GPU check looks for a compute-sanitizer carried along (a wheel, or an unpacked tree)
CARRIED = REPO / ".sanitizer"
SYSTEM = (Path("/usr/local/cuda/bin/compute-sanitizer"), Path("/usr/local/cuda/compute-sanitizer/compute-sanitizer"))
TOOLS = ("memcheck", "racecheck")
EXIT_UNUSABLE, EXIT_MISSING = 75, 76


def _from_wheel(wheel: Path) -> Path:
    """Unpack an ``nvidia-cuda-sanitizer-api`` wheel into a temporary folder; its libraries are put
    beside the executable, where compute-sanitizer looks for them."""
    root = Path(tempfile.mkdtemp(prefix="compute_sanitizer_"))
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(root)
    return _in_tree(root)


def _in_tree(root: Path) -> Path:
    found = sorted(root.rglob("compute-sanitizer"))
    if not found:
        raise FileNotFoundError(f"no compute-sanitizer under {root}")
    tool = found[0]
    tool.chmod(0o755)
    for library in tool.parent.parent.glob("lib/*.so*"):
        if not (tool.parent / library.name).exists():
            shutil.copy2(library, tool.parent / library.name)
    return tool


def _resolve(path: Path) -> Path:
    if path.is_dir():
        wheels = sorted(path.glob("*.whl"))
        return _from_wheel(wheels[-1]) if wheels else _in_tree(path)
    if path.suffix == ".whl":
        return _from_wheel(path)
    if path.is_file():
        return path
    raise FileNotFoundError(f"compute-sanitizer: {path} does not exist")


def find_sanitizer(explicit=None, carried=CARRIED):
    """compute-sanitizer to use, or None: ``explicit`` (an executable, a wheel or a folder holding
    either; also ``$COMPUTE_SANITIZER``), else the one on ``PATH`` or in the CUDA toolkit, else
    a copy carried into ``carried``. An ``explicit`` path that does not exist raises."""
    explicit = explicit or os.environ.get("COMPUTE_SANITIZER")
    if explicit:
        return _resolve(Path(explicit))
    on_path = shutil.which("compute-sanitizer")
    if on_path:
        return Path(on_path)
    for candidate in SYSTEM:
        if candidate.is_file():
            return candidate
    if carried.exists():
        return _resolve(carried)
    return None


_SUMMARY = re.compile(r"ERROR SUMMARY: (\d+) error")
_UNUSABLE = ("Device not supported", "Target application terminated before first instrumented API call")


def _streamed(command, lines):
    """The output lines of ``command`` as they come (also appended to ``lines``, then its exit status)."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    for line in proc.stdout:
        lines.append(line)
        yield line
    lines.append(proc.wait())


def run_tools(sanitizer, tools=TOOLS, log=None) -> int:
    """Run ``--cases`` under each tool; print (and append to ``log``) the tools' output."""
    worst = 0
    for tool in tools:
        command = [str(sanitizer), "--tool", tool, "--error-exitcode", "1", "--print-limit", "20",
                   sys.executable, str(Path(__file__).resolve()), "--cases"]
        lines = []
        with open(log or os.devnull, "a", encoding="utf-8") as sink:
            for line in itertools.chain([f"--- {tool}: {' '.join(command)}\n"], _streamed(command, lines)):
                print(line, end="", flush=True)
                sink.write(line)
                sink.flush()
        returncode, output = lines.pop(), "".join(lines)
        errors = [int(n) for n in _SUMMARY.findall(output)]
        if returncode == 0 and errors and not any(errors):
            print(f"--- {tool}: no errors", flush=True)
            continue
        if any(marker in output for marker in _UNUSABLE) and not any(errors):
            print(f"--- {tool}: compute-sanitizer cannot run here", flush=True)
            worst = max(worst, EXIT_UNUSABLE) if worst != 1 else 1
            continue
        print(f"--- {tool}: FAILED (exit {returncode}, error counts {errors})", flush=True)
        worst = 1
    return worst


class _Covered:
    """A kernel device that remembers which entry points were launched."""

    def __init__(self, device, **overrides):
        self._device = device
        self.launched = set()
        self.__dict__.update(overrides)

    def __getattr__(self, name):
        return getattr(self._device, name)

    def function(self, family, entry, dtype, index):
        self.launched.add(f"{family}.{entry}")
        return self._device.function(family, entry, dtype, index)


def _cases(rng, dtype):
    """(name, primitive name, device overrides, arguments, keywords) of the small cases."""
    from invconv_cupy.orientation import parse_orientation

    TL, TR, BL, BR = (parse_orientation(o) for o in ("TL", "TR", "BL", "BR"))
    x = rng.standard_normal((2, 3, 7, 9)).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    w = 0.2 * rng.standard_normal((3, 3, 3, 2)).astype(dtype)
    w[:, :, -1, -1] += np.diag(rng.uniform(1, 2, 3)).astype(dtype)
    w_tr = w[:, :, :, ::-1].copy()  # the anchor tap of TR is (KH-1, 0)
    w_br = w[:, :, ::-1, ::-1].copy()  # the anchor tap of BR is (0, 0)
    wide = 0.05 * rng.standard_normal((20, 20, 3, 3)).astype(dtype)
    wide[:, :, -1, -1] += np.diag(rng.uniform(1, 2, 20)).astype(dtype)
    wide_bl = wide[:, :, ::-1, :].copy()  # the anchor tap of BL is (0, KW-1)
    y20 = rng.standard_normal((1, 20, 5, 6)).astype(dtype)
    return [
        ("conv tiled TL", "conv", {}, (x, w, TL), {"tile": (4, 5)}),
        ("conv tiled BR transposed", "conv", {}, (x, w_br, BR, True), {"tile": (3, 4)}),
        ("conv untiled TR", "conv", {}, (x, w, TR), {"tiled": False}),
        ("conv untiled BL transposed, 64-bit", "conv", {"index64": True}, (x, w, BL, True), {"tiled": False}),
        ("weight_grad tiles, groups", "weight_grad", {}, (g, x, (3, 2), TR), {"tile": (3, 4), "max_threads": 32}),
        ("weight_grad 64-bit", "weight_grad", {"index64": True}, (g, x, (3, 2), TL), {}),
        *((f"solve one tile per image G={G}", "solve", {}, (x, w, TL), {"outputs_per_thread": G})
          for G in (1, 2, 4, 8, 16)),
        ("solve linked tiles transposed", "solve", {}, (g, w, TL, True), {"max_tile": 4}),
        ("solve linked tiles BR, 64-bit, every diagonal published", "solve", {"index64": True}, (x, w_br, BR),
         {"max_tile": 2, "grain": 1}),
        ("solve 2 images per block, linked tiles", "solve", {}, (x, w_tr, TR), {"max_tile": 4, "slots": 2}),
        ("solve matrices in global", "solve", {"max_shared_memory_per_block_optin": 4096}, (y20, wide, TL), {}),
        ("solve A^-1 by solve_invert, matrices in global", "solve", {"max_shared_memory_per_block_optin": 2048},
         (y20, wide_bl, BL, True), {"inverse_in_global": True}),
    ]


def run_cases(device, out=None) -> int:
    """Every case on ``device`` against the NumPy path; 0 when all agree and every entry point ran."""
    out = out or sys.stdout
    from invconv_cupy import kernel_source
    from invconv_cupy.backends import kernel_conv, kernel_solve, numpy_backend

    primitives = {"conv": kernel_conv.conv, "weight_grad": kernel_conv.weight_grad, "solve": kernel_solve.solve}
    xp = device.xp
    to_host = getattr(xp, "asnumpy", np.asarray)
    launched, failures = set(), 0
    for dtype, tolerance in (("float32", 1e-4), ("float64", 1e-10)):
        for name, primitive, overrides, args, kwargs in _cases(np.random.default_rng(), dtype):
            covered = _Covered(device, **overrides)
            on_device = tuple(xp.asarray(a) if isinstance(a, np.ndarray) else a for a in args)
            got = to_host(primitives[primitive](covered, *on_device, **kwargs))
            want = getattr(numpy_backend, primitive)(*(a.astype(np.float64) if isinstance(a, np.ndarray) else a
                                                       for a in args))
            error = float(np.abs(got - want).max() / max(1.0, np.abs(want).max()))
            ok = np.isfinite(got).all() and error <= tolerance
            failures += not ok
            launched |= covered.launched
            print(f"{'ok  ' if ok else 'FAIL'} {dtype} {name}: relative error {error:.1e}; "
                  f"{', '.join(sorted(covered.launched))}", file=out, flush=True)
    every = {f"{f}.{e}" for f in kernel_source.families() for e in kernel_source.entry_points(f)}
    missing = sorted(every - launched)
    if missing:
        print(f"FAIL entry points no case launched: {', '.join(missing)} (add a case to bench/gpu_sanitize.py)",
              file=out)
    return 1 if failures or missing else 0


def _device(kind):
    if kind == "emulate":
        from invconv_cupy.backends import emulate_backend

        return emulate_backend.device
    import cupy

    cupy.cuda.set_allocator(None)  # no memory pool: every array is its own allocation
    from invconv_cupy.backends import cupy_backend

    return cupy_backend.device


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", action="store_true", help="run the cases (what runs under the tool)")
    parser.add_argument("--device", choices=("cupy", "emulate"), default="cupy")
    parser.add_argument("--sanitizer", help="compute-sanitizer: an executable, a wheel, or a folder with either")
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    parser.add_argument("--log", help="append the tools' output to this file")
    args = parser.parse_args(argv)
    if args.cases:
        return run_cases(_device(args.device))
    sanitizer = find_sanitizer(args.sanitizer)
    if sanitizer is None:
        print("no compute-sanitizer (not on PATH, not in /usr/local/cuda, none carried in .sanitizer/)")
        return EXIT_MISSING
    print(f"compute-sanitizer: {sanitizer}", flush=True)
    return run_tools(sanitizer, args.tools, args.log)


if __name__ == "__main__":
    sys.exit(main())
