"""The broken-kernel catalogue of ``kernels/solve.cu``: removing any one barrier, fence or flag
wait must be caught.

Every synchronization point of the kernel is listed in :data:`SYNC_POINTS`. One
emulator build of the real kernel text guards each point ``k`` with
``if (ic_solve_broken != k)`` (a block-uniform switch that a one-thread launch
sets), so one compile serves every case: with ``ic_solve_broken = k`` the point
is gone (or, for a fence, its relaxed form runs instead). Each case then solves
on the CPU in the emulator's race mode (threads switch at random at every
built-in, blocks run concurrently and sleep at random) and expects wrong values,
NaN (outputs start as NaN, shared memory as 0xFF bytes) or a kernel error (the
watchdog) in at least one of a few runs; with no point removed the same build
matches the dense oracle. Cases the emulator cannot expose yet say which
capability they wait for, so the catalogue stays complete.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import make_weight
from invconv_cupy import kernel_source
from invconv_cupy.backends import kernel_solve
from invconv_cupy.emulator import EmulatedKernelError, EmulatorDevice
from invconv_cupy.orientation import parse_orientation
from oracle import Dense

TSAN_BUILD = ("a missing acquire or release fence shows only as a data race under the emulator's ThreadSanitizer "
              "mode (x86 keeps stores in order), and that build fails here: g++ 12 has no __tsan_ignore_thread_begin "
              "(cuda_shim.h, emu branch)")

# name -> (exact statement in kernels/solve.cu, what runs instead when broken, why it cannot be caught yet or None)
SYNC_POINTS = {
    "prepare: A^-1 formed before the step matrices": ("__syncthreads();   // A^-1 is formed", "", None),
    "claim published": ("__syncthreads();   // the claim is shared; the previous tile is no longer read", "", None),
    "flag wait": ("while (!ic_load_acquire(flag)) __nanosleep(100);   // acquire: the tile is written", "", None),
    "acquire (the fence after the flag load)": (
        "while (!ic_load_acquire(flag)) __nanosleep(100);   // acquire: the tile is written",
        "while (!ic_load_relaxed(flag)) __nanosleep(100);", TSAN_BUILD),
    "halo tiles ready before staging": ("__syncthreads();   // every tile the halo reads is ready", "", None),
    "tile staged": ("__syncthreads();   // the tile is staged", "", None),
    "z formed": ("__syncthreads();   // z is formed", "", None),
    "step barrier": ("__syncthreads();   // the step's pixels are written", "", None),
    "tile written before its flag": ("__syncthreads();   // every pixel of the tile is written", "", None),
    "release (the fence before the flag store)": ("ic_store_release(flags + ti * tiles_w + tj, 1);",
                                                  "ic_store_relaxed(flags + ti * tiles_w + tj, 1);", TSAN_BUILD),
}
NAMES = list(SYNC_POINTS)
_BROKEN = "__device__ int ic_solve_broken = -1;\n"
_SWITCH = """
extern "C" __global__ void solve_test_break(int point) { ic_solve_broken = point; }
"""


def breakable(family, text):
    """``solve``'s source with every catalogued point ``k`` behind ``if (ic_solve_broken != k)``."""
    if family != "solve":
        return text
    statements = {}
    for k, (old, new, _) in enumerate(SYNC_POINTS.values()):
        statements.setdefault(old, []).append((k, new))
    for old, cases in statements.items():
        assert text.count(old) == 1, f"{old!r} is not once in solve.cu; update the catalogue"
        code = old.split("//")[0].strip()
        guarded = code
        for k, new in cases:
            guarded = f"if (ic_solve_broken != {k}) {{ {guarded} }} else {{ {new} }}"
        text = text.replace(old, guarded, 1)
    marker = '#line 1 "solve.cu"'
    assert text.count(marker) == 1
    return text.replace(marker, _BROKEN + marker) + _SWITCH


def _device(**settings):
    return EmulatorDevice(max_threads_per_block=64, transform=breakable, watchdog=5, concurrent_blocks=8, **settings)


def _break(device, name):
    """Remove the point ``name`` (None: none) from the next launches on ``device``."""
    point = -1 if name is None else NAMES.index(name)
    device.function("solve", "solve_test_break", "float64", "int32")((1,), (1,), (np.int32(point),))


def _run(device, name, rng):
    """A tiled solve (2 x 2 tiles, halos from other tiles; 1 output per thread, 2 lanes: several
    output groups and shuffles) on fresh inputs: (result, dense oracle's answer)."""
    C = 5 if name.startswith("prepare") else 2   # the prepare's rows need other threads' columns of A^-1
    B, H, W, K = 2, 6, 5, 3
    w = make_weight(rng, C, K, K, "TR")
    y = rng.standard_normal((B, C, H, W))
    got = kernel_solve.solve(device, y, w, parse_orientation("TR"), max_tile=2, outputs_per_thread=1, lanes=2)
    return got, Dense(w, H, W, "TR").solve(y)


def test_every_synchronization_point_of_solve_cu_is_in_the_catalogue():
    text = kernel_source.read("solve.cu")
    for name, (old, _, _) in SYNC_POINTS.items():
        assert text.count(old) == 1, name
    code = "\n".join(line.split("//")[0] for line in text.splitlines())
    statements = dict.fromkeys(old for old, _, _ in SYNC_POINTS.values())   # acquire and wait share one
    listed = " ".join(old.split("//")[0] for old in statements)
    for primitive in ("__syncthreads()", "__syncwarp(", "__threadfence()", "ic_load_acquire(", "ic_store_release(",
                      "ic_load_relaxed(", "ic_store_relaxed("):
        assert code.count(primitive) == listed.count(primitive), primitive


def test_the_breakable_build_with_nothing_removed_is_right(rng):
    device = _device(race=True)
    _break(device, None)
    for name in ("prepare: A^-1 formed before the step matrices", "tile staged"):   # both shapes _run uses
        got, want = _run(device, name, rng)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_removing_a_synchronization_point_is_caught(rng, name):
    blocker = SYNC_POINTS[name][2]
    if blocker is not None:
        pytest.skip(blocker)
    if name == "claim published":
        _caught_in_a_subprocess(name)
        return
    device = _device(race=True)
    _break(device, name)
    for _ in range(64):   # a race may hide in a run (one run here takes milliseconds)
        try:
            got, want = _run(device, name, rng)
        except EmulatedKernelError:   # e.g. the watchdog: a block waits for a flag nobody sets
            return
        if not np.allclose(got, want, rtol=0, atol=1e-9):
            return
    pytest.fail(f"the emulator did not notice the missing {name}")


_PROBE = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[2])
    import test_solve_harness as harness
    device = harness._device(race=True)
    harness._break(device, sys.argv[1])
    rng = np.random.default_rng()
    same = True
    for _ in range(3):
        got, want = harness._run(device, sys.argv[1], rng)
        same = same and np.allclose(got, want, rtol=0, atol=1e-9)
    print("same" if same else "different", flush=True)
""")


def _caught_in_a_subprocess(name):
    """A broken claim can send a block to a tile that does not exist (out-of-bounds accesses, or a
    wait for a flag nobody sets): run it in its own process, where a crash or a hang also counts
    as caught. The build is compiled here first, so the probe only loads it from the cache."""
    _device().function("solve", "solve_prepare", "float64", "int32")
    tests = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run([sys.executable, "-c", _PROBE, name, tests], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return
    assert out.returncode != 0 or out.stdout.strip() == "different", out.stdout + out.stderr[-2000:]
