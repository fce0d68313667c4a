"""The broken-kernel catalogue of ``kernels/solve.cu``: removing any one barrier, fence or flag
wait must be caught.

Each case deletes one synchronization point from the real kernel text (the
emulator's ``transform`` hook), runs the solve on the CPU, and expects wrong
values or NaN (outputs start as NaN, shared memory as 0xFF bytes) in at least
one of a few runs; the unbroken kernel must match the dense oracle. Cases the
emulator cannot expose yet are listed with the capability they wait for, so
the catalogue stays complete.
"""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import make_weight
from invconv_cupy import kernel_source
from invconv_cupy.backends import kernel_solve
from invconv_cupy.emulator import EmulatorDevice
from invconv_cupy.orientation import parse_orientation
from oracle import Dense

CONCURRENT_BLOCKS = "needs blocks that run concurrently (the emu branch's emulator); here blocks run one at a time"
RACE_MODE = ("needs the emulator's race-exposing mode (random delays between barrier phases, emu branch): only "
             "the first step reads z formed by another thread, which formed it first; 0 of 10 runs caught it")
WEAK_MEMORY = "needs an emulated weak memory order (x86 keeps stores in order, so a missing fence cannot show)"

# name -> (exact text in kernels/solve.cu, how to run it, why the emulator cannot expose it yet or None)
SYNC_POINTS = {
    "prepare: A^-1 formed before the step matrices": ("__syncthreads();   // A^-1 is formed", "many_channels", None),
    "claim published": ("__syncthreads();   // the claim is shared; the previous tile is no longer read",
                        "subprocess", None),
    "flag wait": ("while (ic_solve_flag_load(flag) == 0) {}", "tiles", CONCURRENT_BLOCKS),
    "acquire fence": ("__threadfence();   // acquire: the flag's tile before the halo loads", "tiles", WEAK_MEMORY),
    "halo tiles ready before staging": ("__syncthreads();   // every tile the halo reads is ready", "tiles",
                                        CONCURRENT_BLOCKS),
    "tile staged": ("__syncthreads();   // the tile is staged", "single", None),
    "z formed": ("__syncthreads();   // z is formed", "single", RACE_MODE),
    "step barrier": ("__syncthreads();   // the step's pixels are written", "single", None),
    "release fence": ("__threadfence();   // release: this thread's pixels before the flag", "tiles", WEAK_MEMORY),
    "tile written before its flag": ("__syncthreads();   // every pixel of the tile is written", "tiles",
                                     CONCURRENT_BLOCKS),
}


def _removing(text_to_remove):
    def transform(family, text):
        if family != "solve":
            return text
        assert text.count(text_to_remove) == 1, f"{text_to_remove!r} is not once in solve.cu; update the catalogue"
        return text.replace(text_to_remove, "", 1)

    return transform


def _run(device, how, rng):
    """One solve on fresh inputs: (result, dense oracle's answer)."""
    C = 7 if how == "many_channels" else 3
    B, H, W, KH, KW = 2, 7, 6, 3, 3
    w = make_weight(rng, C, KH, KW, "TR")
    y = rng.standard_normal((B, C, H, W))
    options = {"max_tile": 2} if how == "tiles" else {}
    return kernel_solve.solve(device, y, w, parse_orientation("TR"), **options), Dense(w, H, W, "TR").solve(y)


def test_every_synchronization_point_of_solve_cu_is_in_the_catalogue():
    text = kernel_source.read("solve.cu")
    for name, (old, _, _) in SYNC_POINTS.items():
        assert text.count(old) == 1, name
    code = "\n".join(line.split("//")[0] for line in text.splitlines())
    listed = " ".join(old.split("//")[0] for old, _, _ in SYNC_POINTS.values())
    for primitive in ("__syncthreads()", "__syncwarp(", "__threadfence()", "while (ic_solve_flag_load"):
        assert code.count(primitive) == listed.count(primitive), primitive


@pytest.mark.parametrize("name", list(SYNC_POINTS))
def test_removing_a_synchronization_point_is_caught(rng, name):
    old, how, blocker = SYNC_POINTS[name]
    if blocker is not None:
        pytest.skip(blocker)
    if how == "subprocess":
        _caught_in_a_subprocess(old)
        return
    device = EmulatorDevice(max_threads_per_block=64, transform=_removing(old))
    for _ in range(3):   # the threads really run concurrently; a race may hide in one run
        got, want = _run(device, how, rng)
        if not np.allclose(got, want, rtol=0, atol=1e-9):
            break
    else:
        pytest.fail(f"the emulator did not notice the missing {name}")
    got, want = _run(EmulatorDevice(max_threads_per_block=64), how, rng)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)   # the unbroken kernel is right


_PROBE = textwrap.dedent("""
    import sys
    import numpy as np
    from invconv_cupy.backends import kernel_solve
    from invconv_cupy.emulator import EmulatorDevice
    from invconv_cupy.orientation import parse_orientation
    old = sys.argv[1]
    rng = np.random.default_rng()
    w = rng.uniform(-0.05, 0.05, (3, 3, 3, 3))
    w[:, :, 2, 0] += np.diag([1.5, -1.2, 1.8])
    y = rng.standard_normal((2, 3, 7, 6))
    orient = parse_orientation("TR")
    want = kernel_solve.solve(EmulatorDevice(max_threads_per_block=64), y, w, orient)
    broken = EmulatorDevice(max_threads_per_block=64, transform=lambda f, t: t.replace(old, "", 1))
    same = all(np.array_equal(kernel_solve.solve(broken, y, w, orient), want) for _ in range(3))
    print("same" if same else "different", flush=True)
""")


def _caught_in_a_subprocess(old):
    """A broken claim can send a block to a tile that does not exist (out-of-bounds accesses, or a
    wait for a flag nobody sets): run it in its own process, where a crash or a hang also counts
    as caught. Both kernels are compiled here first, so the probe only loads them from the cache."""
    for transform in (None, _removing(old)):
        EmulatorDevice(transform=transform).function("solve", "solve_prepare", "float64", "int32")
    try:
        out = subprocess.run([sys.executable, "-c", _PROBE, old], capture_output=True, text=True, timeout=12)
    except subprocess.TimeoutExpired:
        return
    assert out.returncode != 0 or out.stdout.strip() == "different", out.stdout + out.stderr[-2000:]
