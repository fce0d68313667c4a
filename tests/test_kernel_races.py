"""Removing any one barrier, warp sync or flag wait is caught; a removed fence is caught by ThreadSanitizer.

Every synchronization site of ``kernels/solve.cu``, ``kernels/conv.cu`` and of the test kernels
(``tests/emulator_kernels.cu``) is switched off in turn (``kernel_breaks``: one build
serves all cases), and the kernel runs in race mode (threads switch at random at every
built-in, workers yield and sleep at random) until a result is wrong, NaN, or the
emulator reports an error. Fences change nothing on an x86 CPU (its stores are never
reordered), so they are caught by ThreadSanitizer instead: under it the emulator's only
happens-before edges are barriers, warp intrinsics and fences as C++ defines them.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import emulator_kernels
from conftest import make_weight
from invconv_cupy import kernel_source
from invconv_cupy.backends import kernel_solve
from invconv_cupy.emulator import EmulatedKernelError, EmulatorDevice, sanitizer_runtime
from invconv_cupy.orientation import parse_orientation
from kernel_breaks import VARIABLE, sites, switchable
from oracle import Dense
from test_kernel_harness import run_conv_case

TRIES = 4
SOLVE_TRIES = 48
SOLVE_SITES = sites(kernel_source.read("solve.cu"), "solve.cu")
CONV_SITES = sites(kernel_source.read("conv.cu"), "conv.cu")
# the harness case (test_kernel_harness) that runs each conv.cu entry point with several threads per step
CONV_CASES = {"conv_apply_tiled": "conv_tiles", "conv_weight_grad_partial": "weight_grad_tiles",
              "conv_weight_grad_finish": "weight_grad_lanes"}
TEST_SITES = sites(emulator_kernels.SOURCE, "emulator_kernels.cu")


def _switchable_in(family):
    """A transform that makes ``kernels/<family>.cu``'s sites switchable."""
    text = kernel_source.read(f"{family}.cu")
    return lambda name, source: source.replace(text, switchable(text)) if name == family else source


def _solve_devices(race=True, sanitize=None):
    """An emulated device whose solve.cu has every site switchable (one build), 8 blocks at once."""
    return [EmulatorDevice(max_threads_per_block=64, transform=_switchable_in("solve"), race=race, sanitize=sanitize,
                           concurrent_blocks=8, watchdog=2.0)]


def _solve_runs(devices, rng):
    """(result, dense answer) pairs: solves in 2 x 2 linked tiles (halos from tiles other blocks solve, handed
    over diagonal by diagonal, so the counts, exports and waits matter) with one output per thread and 2 lanes
    (several output groups, shuffles), of 2 channels with a count published after every diagonal and of 5
    channels with the plan's grain (with 5, solve_prepare's rows read columns of A^-1 other threads formed)."""
    out = []
    for device in devices:
        for C, grain in ((2, 1), (5, None)):
            w = make_weight(rng, C, 3, 3, "TR")
            y = rng.standard_normal((2, C, 6, 5))
            x = kernel_solve.solve(device, y, w, parse_orientation("TR"), max_tile=2, outputs_per_thread=1, lanes=2,
                                   grain=grain)
            out.append((x, Dense(w, 6, 5, "TR").solve(y)))
    return out


def _test_kernel_runs(functions, kernel, rng):
    """(result, answer) pairs of the test kernel that holds a site."""
    if kernel == "emu_wavefront":
        return [emulator_kernels.run_wavefront(functions, rng, 8, 8, 2, 16, 8),
                emulator_kernels.run_wavefront(functions, rng, 13, 11, 3, 6, 8)]
    assert kernel == "emu_shuffles", kernel
    x = rng.standard_normal(128)
    out = np.full((10, 128), np.nan)
    functions("emu_shuffles")((2,), (64,), (x, out, np.zeros((7, 128), np.uint32), np.zeros(128, np.int32),
                                            np.zeros(128, np.uint64)), shared_mem=64 * 8)
    return [(out[9], x.reshape(-1, 2)[:, ::-1].ravel())]   # the __syncwarp exchange: lane ^ 1


def _wrong(runs):
    return any(got.shape != want.shape or not np.allclose(got, want, rtol=0, atol=1e-9) for got, want in runs)


def _caught(run, tries=TRIES):
    """Whether some of ``tries`` runs gives a wrong result or an emulator error."""
    for _ in range(tries):
        try:
            if _wrong(run()):
                return True
        except EmulatedKernelError:
            return True
    return False


@pytest.fixture(scope="module")
def solve_devices():
    return _solve_devices()


@pytest.fixture(scope="module")
def test_functions():
    return emulator_kernels.emulator(switchable(emulator_kernels.SOURCE), race=True, concurrent_blocks=8,
                                     watchdog=2.0)


def test_every_site_is_listed():
    """The catalogue follows the sources: solve.cu has 5 barriers, the communication warp's warp sync, fence
    and count wait (the comment on each line says what it orders), conv.cu 5 barriers; the test kernels have
    barriers, a warp sync, a fence, flag waits and a count wait."""
    patterns = [s.pattern for s in SOLVE_SITES]
    assert (patterns.count("__syncthreads();"), patterns.count("__syncwarp();"),
            patterns.count("while (ic_load_acquire("), patterns.count("__threadfence();"), len(patterns)) == \
        (5, 1, 1, 1, 8)
    assert [s.pattern for s in CONV_SITES] == ["__syncthreads();"] * 5
    assert {s.kernel for s in CONV_SITES} <= set(CONV_CASES)
    assert {s.pattern for s in TEST_SITES} == {"__syncthreads();", "__syncwarp();", "__threadfence();",
                                               "while (!ic_load_acquire(", "while (ic_load_acquire("}


def _publishes_the_claim(site):
    """The barrier that shares the claimed tile: without it threads read the claim slot's 0xFF
    poison and index images that do not exist, which can crash the process."""
    return "the claim is shared" in kernel_source.read("solve.cu").splitlines()[site.line - 1]


_SOLVE_PROBE = textwrap.dedent("""
    import os, sys
    import numpy as np
    sys.path[:0] = [os.getcwd()]
    import test_kernel_races as races
    os.environ[races.VARIABLE] = sys.argv[1]
    devices, rng = races._solve_devices(), np.random.default_rng()
    print("caught" if races._caught(lambda: races._solve_runs(devices, rng), races.SOLVE_TRIES) else "missed")
""")


@pytest.mark.parametrize("site", [s for s in SOLVE_SITES if s.pattern != "__threadfence();"], ids=lambda s: s.id)
def test_removing_a_synchronization_from_solve_is_caught(solve_devices, rng, monkeypatch, site):
    monkeypatch.setenv(VARIABLE, "-1")
    assert not _wrong(_solve_runs(solve_devices, rng)), "the unbroken kernel is wrong"   # also builds the library
    if _publishes_the_claim(site):   # in a process of its own: a crash counts as caught
        out = subprocess.run([sys.executable, "-c", _SOLVE_PROBE, str(site.index)], capture_output=True, text=True,
                             cwd=os.path.dirname(__file__), timeout=300)
        assert out.returncode != 0 or out.stdout.strip() == "caught", out.stdout + out.stderr[-2000:]
        return
    monkeypatch.setenv(VARIABLE, str(site.index))
    # a run takes milliseconds; the barrier before a tile's flag needs a few dozen to show
    assert _caught(lambda: _solve_runs(solve_devices, rng), SOLVE_TRIES), f"removing {site.id} went unnoticed"


@pytest.mark.parametrize("site", CONV_SITES, ids=lambda s: s.id)
def test_removing_a_synchronization_from_conv_is_caught(rng, monkeypatch, site):
    device = EmulatorDevice(transform=_switchable_in("conv"), race=True)
    monkeypatch.setenv(VARIABLE, "-1")
    assert not _wrong([run_conv_case(device, CONV_CASES[site.kernel], rng)]), "the unbroken kernel is wrong"
    monkeypatch.setenv(VARIABLE, str(site.index))
    assert _caught(lambda: [run_conv_case(device, CONV_CASES[site.kernel], rng)]), f"removing {site.id} went unnoticed"


# (emu_static_shared's first barrier only makes that test stricter; removing it changes no result)
RACE_SITES = [s for s in TEST_SITES
              if s.pattern != "__threadfence();" and s.kernel in ("emu_wavefront", "emu_shuffles")]


@pytest.mark.parametrize("site", RACE_SITES, ids=lambda s: f"{s.kernel} {s.id}")
def test_removing_a_synchronization_from_a_test_kernel_is_caught(test_functions, rng, monkeypatch, site):
    monkeypatch.setenv(VARIABLE, "-1")
    assert not _wrong(_test_kernel_runs(test_functions, site.kernel, rng)), "the unbroken kernel is wrong"
    monkeypatch.setenv(VARIABLE, str(site.index))
    assert _caught(lambda: _test_kernel_runs(test_functions, site.kernel, rng)), f"removing {site.id} went unnoticed"


_TSAN_PROBE = textwrap.dedent("""
    import os, sys
    import numpy as np
    sys.path[:0] = [os.getcwd()]
    import emulator_kernels, test_kernel_races as races
    from kernel_breaks import switchable
    rng = np.random.default_rng(int(sys.argv[1]))
    functions = emulator_kernels.emulator(switchable(emulator_kernels.SOURCE), race=True, concurrent_blocks=8,
                                          sanitize="thread")
    solve_devices = races._solve_devices(sanitize="thread")
    for case in sys.argv[2:]:
        os.environ["IC_TEST_SKIP"] = case.split(":")[1]
        print(f"=== case {case}", file=sys.stderr, flush=True)
        kernel = case.split(":")[0]
        runs = races._solve_runs(solve_devices, rng) if kernel == "solve" else \\
            races._test_kernel_runs(functions, kernel, rng)
        print(f"=== end {case} wrong={races._wrong(runs)}", file=sys.stderr, flush=True)
""")


@pytest.mark.slow
def test_thread_sanitizer_reports_a_removed_fence_and_nothing_else():
    """Clean kernels (the test kernels, solve.cu) give no report; each fence removed gives a data race."""
    runtime = sanitizer_runtime("thread")
    if not os.path.isabs(runtime) or not os.path.exists(runtime):
        pytest.skip("the compiler has no ThreadSanitizer runtime")
    fences = [s for s in SOLVE_SITES + TEST_SITES if s.pattern == "__threadfence();"]
    assert fences
    clean = ["emu_wavefront:-1", "emu_shuffles:-1", "solve:-1"]
    cases = clean + [f"{'solve' if s.file == 'solve.cu' else s.kernel}:{s.index}" for s in fences]
    env = dict(os.environ, LD_PRELOAD=runtime, TSAN_OPTIONS="suppress_equal_stacks=0 exitcode=0")
    out = subprocess.run([sys.executable, "-c", _TSAN_PROBE, str(np.random.SeedSequence().entropy % 2**32), *cases],
                         env=env, capture_output=True, text=True, cwd=os.path.dirname(__file__))
    assert out.returncode == 0, out.stderr[-3000:]
    for case in cases:
        start, end = out.stderr.find(f"=== case {case}\n"), out.stderr.find(f"=== end {case} ")
        assert 0 <= start < end, out.stderr[-3000:]
        report = out.stderr[start:end]
        if case in clean:
            assert "ThreadSanitizer" not in report, report[:3000]
        else:
            assert "WARNING: ThreadSanitizer: data race" in report and ".cu:" in report, f"{case}: {report[:3000]}"
