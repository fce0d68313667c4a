"""An offline cost figure for the solve kernels: SASS instruction counts of the step loop, no GPU.

    python bench/solve_sass.py [--json out.json] [--dtype float32] [--arch 90]

Compiles ``kernels/solve.cu`` (v2) and ``bench/solve_v1.cu`` (v1) to an sm_90
cubin with NVRTC (``-lineinfo``), disassembles it with ``nvdisasm -g`` (the SASS
that ``cuobjdump -sass`` prints, with source lines), finds each step kernel's
hot loop (the innermost loop holding the dot product's FMAs) and counts

- the SASS instructions of one hot-loop iteration (one input channel for v2,
  a pair of input channels for v1), by kind;
- the step code outside the hot loop (the pixel item's set-up, the tap loop,
  the lane reduction and the write), counted statically over all its paths.

With the trip counts of each case's plan it prints, per anti-diagonal step,
the instructions one thread issues (its dependent chain) and the warp
instructions of the whole block over the SM's four schedulers (an issue
bound), for the longest diagonal and on average. **These are estimates from
static instruction counts, not timings**: no latencies, no memory system, no
occupancy effects beyond the plan's thread counts.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import solve_v1  # noqa: E402
from invconv_cupy import kernel_source  # noqa: E402
from invconv_cupy.backends import kernel_solve  # noqa: E402

#: (B, C, H, W, K) of the cases the README's table reports (solve_vjp's transposed solve has the same plan)
CASES = {"headline_100x12x32x32": (100, 12, 32, 32, 3), "c48_100x48x16x16": (100, 48, 16, 16, 3),
         "large_1x3x2048x2048": (1, 3, 2048, 2048, 3)}
H200_SHARED = 227 * 1024
SCHEDULERS_PER_SM = 4
#: the SM clock the microsecond figures assume (an H100/H200 under load; not measured)
ASSUMED_CLOCK_GHZ = 1.755
_FMA = ("FFMA", "DFMA")
_INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
_LINE = re.compile(r'//## File ".*?([\w.]+)", line (\d+)')
_TARGET = re.compile(r"`\(\.(L_x_\d+)\)")
_LABEL = re.compile(r"^\.(L_x_\d+):")


class ToolMissing(RuntimeError):
    """NVRTC or nvdisasm is not installed (``pip install nvidia-cuda-nvrtc nvidia-cuda-nvdisasm``)."""


def _nvidia_file(*parts) -> Path:
    import nvidia

    for root in nvidia.__path__:
        for sub in ("cu13", "cu12", "cuda_nvcc", "cuda_nvdisasm", "cuda_nvrtc"):
            path = Path(root, sub, *parts)
            if path.exists():
                return path
    raise ToolMissing(f"{'/'.join(parts)} not found in the nvidia-* wheels")


def cubin(source: str, name: str, arch: int = 90) -> bytes:
    """``source`` compiled by NVRTC to a cubin for ``sm_<arch>`` with line information.

    Calls libnvrtc through ctypes: CuPy's ``nvrtc.getCUBIN`` drops the cubin's last byte.
    """
    try:
        library = ctypes.CDLL(str(_nvidia_file("lib", "libnvrtc.so.13")))
    except (ImportError, ToolMissing, OSError):
        library = ctypes.CDLL(str(_nvidia_file("lib", "libnvrtc.so.12")))
    program = ctypes.c_void_p()
    if library.nvrtcCreateProgram(ctypes.byref(program), source.encode(), name.encode(), 0, None, None):
        raise RuntimeError("nvrtcCreateProgram failed")
    try:
        options = [f"--gpu-architecture=sm_{arch}".encode(), b"-ftz=true", b"-std=c++17", b"-lineinfo"]
        status = library.nvrtcCompileProgram(program, len(options), (ctypes.c_char_p * len(options))(*options))
        size = ctypes.c_size_t()
        library.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        library.nvrtcGetProgramLog(program, log)
        if status:
            raise RuntimeError(f"NVRTC failed on {name}:\n{log.value.decode(errors='replace')}")
        library.nvrtcGetCUBINSize(program, ctypes.byref(size))
        out = ctypes.create_string_buffer(size.value)
        library.nvrtcGetCUBIN(program, out)
        return out.raw
    finally:
        library.nvrtcDestroyProgram(ctypes.byref(program))


@dataclass(frozen=True)
class Instruction:
    index: int
    opcode: str
    line: int            # source line of the kernel's .cu file (0: none; code inlined from a .cuh header
                         # has the line before it, its caller's)
    label: str | None    # the label this instruction carries
    target: str | None   # branch target label


def disassemble(binary: bytes, workdir: Path) -> dict[str, list[Instruction]]:
    """Function name -> its SASS instructions, via ``nvdisasm -g``."""
    path = workdir / "kernel.cubin"
    path.write_bytes(binary)
    try:
        tool = str(_nvidia_file("bin", "nvdisasm"))
    except (ImportError, ToolMissing) as exc:
        raise ToolMissing(str(exc)) from exc
    text = subprocess.run([tool, "-g", "-c", str(path)], capture_output=True, text=True, check=True).stdout
    functions, current, line, label = {}, None, 0, None
    for raw in text.splitlines():
        if raw.startswith(".text."):
            current = functions.setdefault(raw[len(".text."):].rstrip(":"), [])
            continue
        found = _LINE.search(raw)
        if found:
            if not found.group(1).endswith(".cuh"):   # a header's inlined helper keeps its caller's line
                line = int(found.group(2))
            continue
        found = _LABEL.match(raw.strip())
        if found:
            label = found.group(1)
            continue
        found = _INSTRUCTION.search(raw)
        if found and current is not None:
            target = _TARGET.search(found.group(4))
            current.append(Instruction(len(current), found.group(3), line, label, target.group(1) if target else None))
            label = None
    return functions


def loops(code: list[Instruction]) -> list[tuple[int, int]]:
    """(first, last) instruction indices of every loop: a branch back to a label at or before it."""
    where = {i.label: i.index for i in code if i.label}
    return [(where[i.target], i.index) for i in code if i.target in where and where[i.target] <= i.index]


def _kind(opcode: str) -> str:
    base = opcode.split(".")[0]
    if base in _FMA:
        return "fma"
    if base in ("LDS", "LD", "LDG", "LDL"):
        return "load"
    if base == "SHFL":
        return "shuffle"
    return "other"


@dataclass(frozen=True)
class StepCode:
    """Static facts of one step kernel's SASS: the step's loop nest from the inside out."""

    kernel: str
    instructions: int
    hot_loop_body: int          # instructions in the hot loop's body (its unrolled copies included)
    hot_loop_iterations: int    # source iterations per pass of the body (its unroll factor)
    per_iteration: float        # instructions per source iteration of the hot loop
    per_iteration_kinds: dict
    around: dict                # loop -> its own instructions outside the loop it encloses (static, all paths):
                                # "tap" (v1: remainder code included), "item" (set-up, reduction, write),
                                # "step" (bounds, barrier; v2: what a compute thread of the shared-memory
                                # path runs, not the communication warp's code or the global path)
    local_memory: int           # LDL/STL instructions (spills)


def _enclosing(spans, inner):
    around = [s for s in spans if s[0] <= inner[0] and inner[1] <= s[1] and s != inner]
    if not around:
        raise RuntimeError(f"no loop encloses instructions {inner}")
    return min(around, key=lambda s: s[1] - s[0])


def _region(code, span, lines):
    """``span`` widened over the neighbouring instructions whose source line is in ``lines``."""
    first, last = span
    while first > 0 and code[first - 1].line in lines:
        first -= 1
    while last + 1 < len(code) and code[last + 1].line in lines:
        last += 1
    return first, last


def step_code(code, kernel, fma_line, fmas_per_iteration, levels, other_paths=frozenset(),
              copy_lines=frozenset()) -> StepCode:
    """Find the innermost loop whose FMAs come from ``fma_line`` (the first such copy in the code:
    the shared-memory path), then the loops ``levels`` around it, from the inside out.

    The outermost level does not count what the first copy's threads never run: the instructions
    of source lines ``other_paths`` (another warp's code), every version of the loop it encloses
    (counted at the level below), and the other copies of the hot loop's function (the
    instructions with source lines ``copy_lines`` around their loops).
    """
    spans = loops(code)
    hot = [(a, b) for a, b in spans if any(_kind(i.opcode) == "fma" and i.line == fma_line for i in code[a:b + 1])]
    if not hot:
        raise RuntimeError(f"{kernel}: no loop with the FMAs of line {fma_line}")
    innermost = [s for s in hot if not any(o != s and s[0] <= o[0] and o[1] <= s[1] for o in hot)]
    first, last = min(innermost)
    body = code[first:last + 1]
    fmas = sum(_kind(i.opcode) == "fma" and i.line == fma_line for i in body)
    unroll = max(1, fmas // fmas_per_iteration)
    kinds = {}
    for i in body:
        kinds[_kind(i.opcode)] = kinds.get(_kind(i.opcode), 0) + 1
    around, inner = {}, (first, last)
    for level in levels:
        outer = _enclosing(spans, inner)
        around[level] = (outer[1] - outer[0]) - (inner[1] - inner[0])
        inner = outer
    if other_paths or copy_lines:
        # every version of the enclosed loop (the compiler may emit several) and every other copy
        # of the function (merged spans of its lines around those loops) are not this level's own
        enclosed = []   # outer: the outermost level's loop
        for span in innermost:
            for _ in levels[:-1]:
                span = _enclosing(spans, span)
            enclosed.append(span)
        copies = []
        for a, b in sorted(_region(code, span, copy_lines) for span in enclosed):
            if copies and a <= copies[-1][1] + 1:
                copies[-1] = (copies[-1][0], max(b, copies[-1][1]))
            else:
                copies.append((a, b))
        aside = {i.index for i in code if i.line in other_paths}
        aside.update(k for a, b in enclosed for k in range(a, b + 1))
        aside.update(k for a, b in copies if not a <= first <= b for k in range(a, b + 1))
        around[levels[-1]] = sum(k not in aside for k in range(outer[0], outer[1] + 1))
    local = sum(i.opcode.split(".")[0] in ("LDL", "STL") for i in code)
    return StepCode(kernel, len(code), len(body), unroll, len(body) / unroll,
                    {k: v / unroll for k, v in sorted(kinds.items())}, around, local)


def _line_of(text: str, needle: str) -> int:
    lines = [n + 1 for n, line in enumerate(text.splitlines()) if needle in line]
    if len(lines) != 1:
        raise RuntimeError(f"{needle!r} is on {len(lines)} lines of the kernel source; update solve_sass.py")
    return lines[0]


def _function_lines(text: str, *names) -> frozenset:
    """Source lines (1-based) of the functions ``names``, from the line naming one to its closing brace."""
    lines, out = text.splitlines(), set()
    for name in names:
        start = next(n + 1 for n, line in enumerate(lines) if "__device__" in line and f" {name}(" in line)
        end = next(n for n in range(start, len(lines)) if lines[n - 1] == "}")
        out.update(range(start, end + 1))
    return frozenset(out)


#: solve.cu's functions that only the communication warp of linked tiles runs inside the step loop
_COMMUNICATION = ("ic_solve_word", "ic_solve_at", "ic_solve_each_cell", "ic_solve_stage_halo", "ic_solve_export",
                  "ic_solve_release", "ic_solve_acquire_halo")


def analyse(dtype: str = "float32", arch: int = 90, workdir: Path | None = None):
    """Static SASS facts of the v1 and v2 step kernels: {"v1": {G: StepCode}, "v2": {G: StepCode}}."""
    import tempfile

    v2_text, v1_text = kernel_source.read("solve.cu"), (Path(__file__).with_name("solve_v1.cu")).read_text()
    sources = {"v2": (kernel_source.source("solve", dtype, "int32"), v2_text, "solve_wavefront_g"),
               "v1": (solve_v1.source(dtype, "int32"), v1_text, "solve_tiles_g")}
    fma_lines = {"v2": (_line_of(v2_text, "acc[i] += mv.v[i] * xv;"), 1, ("item", "step")),
                 "v1": (_line_of(v1_text, "odd[g] += m1.v[g] * x1;"), 1, ("tap", "item", "step"))}
    # a v2 compute thread runs neither the communication warp's code nor the step's other matrix path
    aside = {"v2": {"other_paths": _function_lines(v2_text, *_COMMUNICATION),
                    "copy_lines": _function_lines(v2_text, "ic_solve_step")}, "v1": {}}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for version, (source, text, prefix) in sources.items():
            functions = disassemble(cubin(source, f"solve_{version}.cu", arch), Path(workdir or tmp))
            fma_line, per_g, levels = fma_lines[version]
            variants = kernel_solve.OUTPUTS_PER_THREAD if version == "v2" else solve_v1.OUTPUTS_PER_THREAD
            out[version] = {G: step_code(functions[f"{prefix}{G}"], f"{prefix}{G}", fma_line, per_g * G, levels,
                                         **aside[version])
                            for G in variants}
    return out


def _diagonals(th, tw):
    return [min(th - 1, d) - max(0, d - tw + 1) + 1 for d in range(th + tw - 1)]


def step_model(case, facts, itemsize=4):
    """Per-step instruction estimates of one case for v1 and v2 (see the module docstring)."""
    B, C, H, W, K = case
    taps = K * K
    rows = {}
    v1 = solve_v1.plan((B, C, H, W), (K, K), itemsize, shared_limit=H200_SHARED, max_threads=solve_v1.MAX_THREADS)
    v2 = kernel_solve.plan((B, C, H, W), (K, K), itemsize, shared_limit=H200_SHARED)
    for version, how in (("v1", v1), ("v2", v2)):
        code = facts[version][how.outputs_per_thread]
        groups = -(-C // how.outputs_per_thread)
        if version == "v1":
            slots, per_slot, team = how.threads, groups, 1   # work items (pixel, group) over all threads
            per_item = code.around["item"] + (taps - 1) * (code.around["tap"] + math.ceil(C / 2) * code.per_iteration)
        else:   # one flat loop over the lane's inputs; a step takes the pixels of the block's images
            computing = how.threads - 32 * how.linked   # less the communication warp
            slots, per_slot, team = computing // how.team, how.slots, how.team
            per_item = code.around["item"] + math.ceil((taps - 1) * C / how.lanes) * code.per_iteration
        diagonals = _diagonals(how.tile_h, how.tile_w)

        def thread_chain(n):
            return math.ceil(n * per_slot / slots) * per_item + code.around["step"]

        def issue_cycles(n):
            warps_busy = math.ceil(min(n * per_slot * team, slots * team) / 32)
            return thread_chain(n) * warps_busy / SCHEDULERS_PER_SM

        longest = max(diagonals)
        tile_steps = len(diagonals)
        if version == "v1":   # tiles wait for whole neighbour tiles
            critical = (how.tiles_h + how.tiles_w - 1) * tile_steps
        else:
            critical = how.estimate.critical_steps
        # a step costs at least the longer of one thread's chain and the SM's issue cycles
        bound = sum(max(thread_chain(n), issue_cycles(n)) for n in diagonals) / tile_steps * critical
        rows[version] = {
            "kernel": code.kernel, "threads": how.threads, "tile": [how.tile_h, how.tile_w],
            "launches": how.launches if version == "v2" else how.tiles_h + how.tiles_w - 1,
            "hot_loop_instructions_per_fma": round(code.per_iteration / code.per_iteration_kinds["fma"], 2),
            "per_item_instructions": round(per_item),
            "thread_instructions_per_step_longest": round(thread_chain(longest)),
            "thread_instructions_per_step_mean": round(sum(map(thread_chain, diagonals)) / tile_steps),
            "issue_cycles_per_step_longest": round(issue_cycles(longest)),
            "issue_cycles_per_step_mean": round(sum(map(issue_cycles, diagonals)) / tile_steps),
            "steps_on_the_critical_path": round(critical),
            "instruction_bound_us": round(bound / (ASSUMED_CLOCK_GHZ * 1e3), 1),
        }
        if version == "v2":   # the plan's cost model, latencies included
            rows[version]["model_us"] = round(how.estimate.cycles / (ASSUMED_CLOCK_GHZ * 1e3), 1)
            rows[version]["model_bound"] = how.estimate.bound
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="also write the numbers here")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--arch", type=int, default=90)
    args = parser.parse_args(argv)
    facts = analyse(args.dtype, args.arch)
    itemsize = 4 if args.dtype == "float32" else 8
    report = {"estimate": "static SASS instruction counts (NVRTC sm_%d cubin, nvdisasm), not a timing" % args.arch,
              "kernels": {v: {G: asdict(c) for G, c in by_g.items()} for v, by_g in facts.items()},
              "cases": {name: step_model(case, facts, itemsize) for name, case in CASES.items()}}
    for name, rows in report["cases"].items():
        print(f"{name} ({args.dtype}, sm_{args.arch}) -- ESTIMATE from static SASS counts, not a timing")
        for version, row in rows.items():
            print(f"  {version}: " + ", ".join(f"{k}={v}" for k, v in row.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
