"""The emulator's warps, concurrent blocks, flags, watchdog and checks.

The kernels are ``tests/emulator_kernels.cu``; the answers are NumPy restatements of
CUDA's documented semantics. The same kernels compile with NVRTC (the PTX holds the
intended instructions), and the value tests run on a GPU under the ``gpu`` marker.
"""

import ctypes
import re
import threading

import numpy as np
import pytest

from emulator_kernels import FAMILY, SOURCE, cupy_functions, emulator, full_source, run_wavefront, with_test_kernels
from invconv_cupy import kernel_source
from invconv_cupy.emulator import EmulatedFunction, EmulatedKernelError, EmulatorDevice
from invconv_cupy.emulator.build import build, emulator_source
from kernel_backends import KERNEL_BACKENDS

FULL = 0xFFFFFFFF
LANES = np.arange(32)


@pytest.fixture(scope="module")
def emulated():
    return emulator()


@pytest.fixture
def functions(request, emulated):
    return cupy_functions() if request.param == "cupy" else emulated


def _lanes(values, source):
    """``values`` (warps x 32) read at ``source`` lanes."""
    return values[:, source]


def _shuffle_answers(x):
    """The float results of ``emu_shuffles``, each (warps x 32)."""
    w = x.reshape(-1, 32)
    down = w.copy()
    for o in (16, 8, 4, 2, 1):
        down = down + _lanes(down, np.where(LANES + o < 32, LANES + o, LANES))
    xor9 = LANES ^ 9
    return [
        np.repeat(w.sum(1, keepdims=True), 32, 1),
        down,
        np.cumsum(w, 1),
        _lanes(w, (LANES & ~7) + 3),
        _lanes(w, (LANES + 37) % 32),
        _lanes(w, np.where(xor9 >= (LANES & ~7) + 8, LANES, xor9)),
        _lanes(w, np.where((LANES & 15) >= 3, LANES - 3, LANES)),
        _lanes(w, np.where((LANES & 15) + 5 < 16, LANES + 5, LANES)),
        _lanes(w.astype(np.float32).astype(np.float64), np.where(LANES < 31, LANES + 1, LANES)),
        _lanes(w, LANES ^ 1),
    ]


@pytest.mark.parametrize("functions", KERNEL_BACKENDS, indirect=True)
def test_shuffles_votes_and_block_reductions(functions, rng):
    blocks, threads = 3, 64
    n = blocks * threads
    x = rng.standard_normal(n) * 2
    x[rng.choice(n // 2, 5, replace=False)] = -6.0        # some warps fail __all_sync(v > -5)
    out, votes = np.full((10, n), np.nan), np.zeros((7, n), np.uint32)
    ints, wide = np.full(n, -1, np.int32), np.zeros(n, np.uint64)
    functions("emu_shuffles")((blocks,), (threads,), (x, out, votes, ints, wide), shared_mem=threads * 8)

    for k, want in enumerate(_shuffle_answers(x)):
        # sums in another order than NumPy's: absolute tolerance (values are O(10))
        np.testing.assert_allclose(out[k].reshape(-1, 32), want, rtol=0, atol=1e-12, err_msg=f"result {k}")
    w, b = x.reshape(-1, 32), x.reshape(blocks, -1)
    ballot = ((w > 0) << LANES).sum(1).astype(np.uint32)
    per_warp = [ballot, (w > 2).any(1), (w > -5).all(1)]
    for k, want in enumerate(per_warp):
        np.testing.assert_array_equal(votes[k].reshape(-1, 32), np.repeat(np.asarray(want, np.uint32)[:, None], 32, 1))
    per_block = [(b > 0).sum(1), (b > -5).all(1), (b > 2).any(1)]
    for k, want in enumerate(per_block, start=3):
        np.testing.assert_array_equal(votes[k].reshape(blocks, -1), np.repeat(np.asarray(want)[:, None], threads, 1))
    np.testing.assert_array_equal(votes[6].reshape(-1, 32), np.repeat((w > 0).sum(1)[:, None], 32, 1))
    np.testing.assert_array_equal(ints, np.arange(n) ^ 1)
    np.testing.assert_array_equal(wide, (np.arange(n) // 32 * 32).astype(np.uint64) << np.uint64(33))


def test_partial_warps_exited_lanes_and_activemask(emulated, rng):
    """Blocks of 48 threads: the second warp has lanes 0-15 only; the lanes past the end
    count as exited. A shuffle reading them gives NaN (undefined on a GPU)."""
    x = rng.standard_normal(96)
    out, raw, active = np.full(96, np.nan), np.full(96, 0.5), np.full(96, 7, np.uint32)
    emulated("emu_partial_warp")((2,), (48,), (x, out, raw, active))
    lane = np.arange(96) % 48 % 32
    first_warp = np.arange(96) % 48 < 32
    sums = np.zeros(96)
    for start, count in ((0, 32), (32, 16), (48, 32), (80, 16)):
        sums[start] = x[start:start + count].sum()
    np.testing.assert_allclose(out, sums, rtol=0, atol=1e-12)   # another summation order
    shifted = np.where(first_warp & (lane < 16), np.roll(x, -16), np.where(first_warp, x, np.nan))
    np.testing.assert_array_equal(raw, shifted)
    thirds = np.where(first_warp, sum(1 << k for k in range(0, 32, 3)), sum(1 << k for k in range(0, 16, 3)))
    np.testing.assert_array_equal(active, np.where(lane % 3 == 0, thirds, 0))


@pytest.mark.parametrize("functions", KERNEL_BACKENDS, indirect=True)
def test_atomics_on_integers(functions):
    n = 3 * 41
    bits = np.array([0, FULL, 0], np.uint32)
    ints = np.array([-1, 1, 0], np.int32)
    wide, wrap = np.zeros(1, np.uint64), np.array([3, 3], np.uint32)
    functions("emu_atomics")((3,), (41,), (bits, ints, wide, wrap))
    np.testing.assert_array_equal(bits, [FULL, 0, np.bitwise_xor.reduce(1 << (np.arange(n) % 8))])
    np.testing.assert_array_equal(wrap, [(3 + n) % 10, (3 - n) % 10])
    assert (ints[0], ints[1]) == (n - 1, -(n - 1)) and 1 <= ints[2] <= n
    assert wide[0] == np.uint64(n * (n - 1) // 2) << np.uint64(32)


@pytest.mark.parametrize("settings", [{}, {"race": True}, {"concurrent_blocks": 1}, {"concurrent_blocks": 8}],
                         ids=["default", "race", "one-resident-block", "eight-workers"])
def test_persistent_wavefront_with_flags(rng, settings):
    """Blocks claim tiles in dependency order and wait on their neighbours' ready flags:
    this makes progress with any number of resident blocks, one included."""
    functions = emulator(**settings)
    for H, W, tile, blocks, threads in ((13, 11, 3, 6, 8), (7, 20, 2, 3, 32), (5, 5, 5, 2, 64)):
        got, want = run_wavefront(functions, rng, H, W, tile, blocks, threads)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_static_shared_memory_is_per_block():
    """Four blocks hold their static __shared__ arrays at the same time (a grid-wide rendezvous)."""
    out, arrived = np.full(4 * 64, np.nan), np.zeros(1, np.uint32)
    emulator(concurrent_blocks=4)("emu_static_shared")((4,), (64,), (out, arrived))
    np.testing.assert_array_equal(out, (np.arange(4)[:, None] * 1000.0 + (np.arange(64) + 1) % 64).ravel())


def test_portable_context_switch(rng):
    """Off x86-64 the fibers switch with ucontext: the same kernels run that way too."""
    text = with_test_kernels(kernel_source.source(FAMILY, "float64", "int32"))
    entries = kernel_source.find_entry_points(text)
    library = ctypes.CDLL(str(build("#define IC_EMU_UCONTEXT 1\n" + emulator_source(text, entries))))
    device = EmulatorDevice(race=True)
    got, want = run_wavefront(lambda name: EmulatedFunction(device, library, name), rng)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    with pytest.raises(EmulatedKernelError, match="__trap"):
        EmulatedFunction(device, library, "emu_warp_misuse")((1,), (64,), (np.zeros(64), np.int32(5)))


def _within(seconds, call):
    """Run ``call`` in a thread; fail the test (instead of hanging) if it takes longer."""
    outcome = {}

    def target():
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"the launch was still running after {seconds} s: the watchdog did not stop it")
    return outcome.get("error")


def test_watchdog_reports_a_spin_that_never_ends():
    fn = emulator(watchdog=0.3)("emu_spin_forever")
    error = _within(30, lambda: fn((3,), (40,), (np.zeros(1, np.int32), np.zeros(120, np.int32))))
    assert isinstance(error, EmulatedKernelError)
    message = str(error)
    assert "kernel emu_spin_forever: no block made progress" in message
    assert re.search(r"block \(\d,0,0\): 1 thread \(0,0,0\) spinning in ic_load_acquire at emulator_kernels\.cu:\d+",
                     message), message
    assert "39 threads (first (1,0,0)) waiting in __syncthreads at emulator_kernels.cu" in message


def test_watchdog_reports_blocks_that_wait_for_blocks_that_cannot_run():
    """A grid-wide rendezvous needs every block resident at once: with 2 workers for 4 blocks it
    never completes, as on a GPU with too few SMs (CUDA guarantees no co-residency)."""
    fn = emulator(watchdog=0.3, concurrent_blocks=2)("emu_static_shared")
    error = _within(30, lambda: fn((4,), (64,), (np.zeros(256), np.zeros(1, np.uint32))))
    assert isinstance(error, EmulatedKernelError) and "no block made progress" in str(error)
    assert len(re.findall(r"\n  block \(\d,0,0\): 1 thread \(0,0,0\) spinning in ic_load_acquire", str(error))) == 2


@pytest.mark.parametrize("mode, message", [
    (0, r"__shfl_sync at emulator_kernels\.cu:\d+:\d+ with mask 0x\w+, which does not include the calling lane"),
    (1, r"__shfl_xor_sync .* while lane \d+ waits in __shfl_xor_sync at emulator_kernels\.cu:\d+:\d+ "
        r"\(mask 0xffffffff\): the lanes of one mask must call the same intrinsic"),
    (2, r"(__syncthreads at .* while lanes [\d,-]+ of its warp wait for it in __shfl_xor_sync"
        r"|__shfl_xor_sync .* waits for lane 5, which waits in __syncthreads)"),
    (3, r"\(mask 0x0000ffff\) while lane \d+ waits in .*\(mask 0xffffffff\)"
        r"|\(mask 0xffffffff\) while lane \d+ waits in .*\(mask 0x0000ffff\)"),
    (4, r"__shfl_sync at emulator_kernels\.cu:\d+:\d+ with width 12"),
    (5, r"__trap at emulator_kernels\.cu:\d+:\d+ was called"),
], ids=["lane outside its mask", "divergent call sites", "lane in __syncthreads", "overlapping masks",
        "width", "trap"])
def test_warp_intrinsic_misuse_is_an_error(emulated, mode, message):
    with pytest.raises(EmulatedKernelError, match=r"kernel emu_warp_misuse, block \(\d,0,0\), thread \(\d+,0,0\) "
                                                  r"\(warp \d, lane \d+\): .*" + f"({message})"):
        emulated("emu_warp_misuse")((2,), (64,), (np.zeros(128), np.int32(mode)))


def test_misaligned_vector_loads_are_errors(emulated, rng):
    xf, xd = rng.standard_normal(300).astype(np.float32), rng.standard_normal(300)
    outf, outd = np.full(64, np.nan, np.float32), np.full(64, np.nan)
    load = emulated("emu_vector_loads")
    load((2,), (32,), (xf, xd, outf, outd, np.int32(4), np.int32(2)))
    np.testing.assert_allclose(outf, xf[4:260].reshape(-1, 4).sum(1), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(outd, xd[2:130:2] + xd[3:131:2])
    with pytest.raises(EmulatedKernelError, match=r"misaligned .* of 'const struct float4' at emulator_kernels\.cu:"
                                                  r"\d+:\d+: address 0x[0-9a-f]+ is not a multiple of 16"):
        load((2,), (32,), (xf, xd, outf, outd, np.int32(2), np.int32(2)))
    with pytest.raises(EmulatedKernelError, match=r"misaligned .* of 'const struct double2' .* not a multiple of 16"):
        load((2,), (32,), (xf, xd, outf, outd, np.int32(4), np.int32(1)))


@pytest.mark.parametrize("mode, name", [(0, "atomicAdd"), (1, "ic_store_release"), (2, "ic_load_acquire")])
def test_misaligned_atomics_and_flag_accesses_are_errors(emulated, mode, name):
    """These run in the emulator's runtime, outside the kernel code that UBSan checks."""
    words, out = np.array([0, 5, 0], np.uint32), np.zeros(64, np.uint32)
    access = emulated("emu_flag_alignment")
    access((2,), (32,), (words, out, np.int32(4), np.int32(mode)))
    assert words[1] == (69, 7, 5)[mode] and (out == (0, 0, 5)[mode]).all()
    with pytest.raises(EmulatedKernelError, match=rf"misaligned {name} at emulator_kernels\.cu:\d+:\d+: "
                                                  r"address 0x[0-9a-f]+ is not a multiple of 4"):
        access((2,), (32,), (words, out, np.int32(2), np.int32(mode)))


def test_seed_fixes_a_blocks_schedule_and_schedules_differ_between_seeds():
    def arrivals(seed):
        order, counter = np.full(96, -1, np.int32), np.zeros(1, np.uint32)
        emulator(seed=seed)("emu_arrival_order")((1,), (96,), (order, counter))
        assert sorted(order) == list(range(96))
        return order.tolist()

    assert arrivals(7) == arrivals(7)
    assert len({tuple(arrivals(seed)) for seed in (1, 2, 3)}) == 3


def test_settings_are_checked(monkeypatch):
    with pytest.raises(ValueError, match="concurrent_blocks must be an integer from 1 to 1024, got 0"):
        EmulatorDevice(concurrent_blocks=0)
    with pytest.raises(ValueError, match="watchdog must be a number of seconds from 0.001 to 86400, got -1"):
        EmulatorDevice(watchdog=-1)
    with pytest.raises(ValueError, match="race must be True or False"):
        EmulatorDevice(race="yes")
    with pytest.raises(ValueError, match="sanitize must be unset or one of 'address', 'thread', got 'memory'"):
        EmulatorDevice(sanitize="memory")
    with pytest.raises(ValueError, match=r"seed must be an integer from 0 to 2\*\*64 - 1, got 1.5"):
        EmulatorDevice(seed=1.5)
    monkeypatch.setenv("INVCONV_EMULATE_BLOCKS", "many")
    with pytest.raises(ValueError, match="INVCONV_EMULATE_BLOCKS must be an integer from 1 to 1024, got 'many'"):
        EmulatorDevice()
    monkeypatch.setenv("INVCONV_EMULATE_BLOCKS", "3")
    monkeypatch.setenv("INVCONV_EMULATE_RACE", "1")
    monkeypatch.setenv("INVCONV_EMULATE_WATCHDOG", "2.5")
    device = EmulatorDevice()
    assert (device.concurrent_blocks, device.race, device.watchdog) == (3, True, 2.5)


# Each built-in compiles to the instruction it stands for (NVRTC, no GPU needed).
PTX_INSTRUCTIONS = ["shfl.sync.bfly.b32", "shfl.sync.down.b32", "shfl.sync.up.b32", "shfl.sync.idx.b32",
                    "vote.sync.ballot.b32", "vote.sync.any.pred", "vote.sync.all.pred", "bar.warp.sync",
                    "activemask.b32", "bar.red.popc.u32", "bar.red.and.pred", "bar.red.or.pred",
                    "ld.volatile.global.u32", "st.volatile.global.u32", "ld.global.cg", "atom.global.or.b32", "atom.global.inc.u32",
                    "atom.global.cas.b32", "trap"]


@pytest.mark.parametrize("arch", [80, 90])
def test_test_kernels_compile_with_nvrtc_to_the_intended_instructions(arch):
    pytest.importorskip("cupy")
    from invconv_cupy import check_kernels

    ok, ptx, log = check_kernels.compile_ptx(check_kernels._nvrtc(), full_source(), "emulator_kernels.cu", arch)
    assert ok, log
    for entry in kernel_source.find_entry_points(SOURCE):
        assert re.search(rf"\.entry\s+{entry}\s*\(", ptx), entry
    missing = [op for op in PTX_INSTRUCTIONS if op not in ptx]
    assert not missing, missing
    assert "membar.gl" in ptx or "fence.sc.gpu" in ptx
