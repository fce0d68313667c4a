"""The kernel toolchain: sources, the NVRTC check, and the emulator's launch rules."""

import io
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from invconv_cupy import kernel_source
from invconv_cupy.backends import kernel_conv, kernel_launch
from invconv_cupy.emulator import EmulatedLaunchError, EmulatorDevice, KernelCompileError
from invconv_cupy.emulator.build import build, emulator_source, runtime_object
from invconv_cupy.orientation import parse_orientation


def test_families_and_entry_points_are_discovered():
    assert "conv" in kernel_source.families()
    assert kernel_source.entry_points("conv") == (
        "conv_apply", "conv_apply_tiled", "conv_weight_grad_partial", "conv_weight_grad_finish")


def test_sources_concatenate_instead_of_including_our_headers():
    """CuPy's disk cache hashes only the source string: our own headers must be in it."""
    for name in [f"{f}.cu" for f in kernel_source.families()] + ["common.cuh"]:
        assert not re.search(r"^\s*#\s*include", kernel_source.read(name), re.M), name
    text = kernel_source.source("conv", "float32", "int64")
    assert "typedef float ic_real;" in text and "typedef long long ic_index;" in text
    assert kernel_source.read("common.cuh") in text and kernel_source.read("conv.cu") in text
    assert "typedef double ic_real;" in kernel_source.source("conv", "float64", "int32")


def test_check_kernels_compiles_every_entry_point():
    pytest.importorskip("cupy")
    out = subprocess.run([sys.executable, "-m", "invconv_cupy.check_kernels"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith(("ok", "FAIL"))]
    expected = sum(len(kernel_source.entry_points(f)) for f in kernel_source.families()) * 2 * 2 * 2
    assert len(lines) == expected and all(line.startswith("ok") for line in lines)
    assert any(line.endswith("sm_80") for line in lines) and any(line.endswith("sm_90") for line in lines)


def test_check_kernels_fails_on_a_broken_kernel(monkeypatch):
    pytest.importorskip("cupy")
    from invconv_cupy import check_kernels

    real = kernel_source.source
    monkeypatch.setattr(kernel_source, "source", lambda f, d, i: real(f, d, i).replace("ic_real acc = 0;", "acc = 0;", 1))
    out = io.StringIO()
    assert check_kernels.check((80,), out) > 0
    assert "FAIL conv.conv_apply float32 int32 sm_80" in out.getvalue()
    assert "error" in out.getvalue() and "conv.cu" in out.getvalue()   # the compiler log, with the file name


TINY = textwrap.dedent("""
    extern "C" __global__ void tiny_order(int* order, unsigned* counter)
    {
        if (threadIdx.x == 0) order[atomicAdd(counter, 1u)] = (int)blockIdx.x;
    }

    // Threads above `active` return first; the others still meet at barriers.
    extern "C" __global__ void tiny_rotate(const double* x, double* y, int active)
    {
        IC_DYNAMIC_SHARED(double, s);
        const int t = threadIdx.x;
        if (t >= active) return;
        s[t] = x[t];
        __syncthreads();
        y[t] = s[(t + 1) % active];
    }
""")


@pytest.fixture(scope="module")
def tiny():
    device = EmulatorDevice(transform=lambda family, text: text + TINY)
    return lambda name: device.function("conv", name, "float64", "int32")


def test_blocks_run_in_a_shuffled_order(tiny):
    order, counter = np.full(64, -1, np.int32), np.zeros(1, np.uint32)
    tiny("tiny_order")((64,), (32,), (order, counter))
    assert sorted(order) == list(range(64)) and list(order) != list(range(64))


def test_barrier_with_returned_threads(tiny):
    x, y = np.arange(100.0), np.full(100, np.nan)
    tiny("tiny_rotate")((1,), (128,), (x, y, np.int32(100)), shared_mem=100 * 8)
    np.testing.assert_array_equal(y, np.roll(x, -1))


def test_launches_the_gpu_would_refuse(tiny):
    fn = tiny("tiny_rotate")
    x, y = np.zeros(8), np.zeros(8)
    args = (x, y, np.int32(8))
    with pytest.raises(EmulatedLaunchError, match="threads per block"):
        fn((1,), (2048,), args)
    with pytest.raises(EmulatedLaunchError, match=r"exceeds \(1024, 1024, 64\)"):
        fn((1,), (1, 1, 128), args)
    with pytest.raises(EmulatedLaunchError, match="grid"):
        fn((1, 70000), (8,), args)
    with pytest.raises(EmulatedLaunchError, match="positive"):
        fn((0,), (8,), args)
    with pytest.raises(EmulatedLaunchError, match="max_dynamic_shared_size_bytes=49152"):
        fn((1,), (8,), args, shared_mem=64 * 1024)
    with pytest.raises(EmulatedLaunchError, match="opt-in"):
        fn.max_dynamic_shared_size_bytes = 300 * 1024
    fn.max_dynamic_shared_size_bytes = 64 * 1024
    fn((1,), (8,), args, shared_mem=64 * 1024)


def test_arguments_must_match_the_kernel_parameters(tiny):
    fn = tiny("tiny_rotate")
    x, y = np.zeros(8), np.zeros(8)
    with pytest.raises(TypeError, match="fixed-width"):
        fn((1,), (8,), (x, y, 8))                      # a Python int
    with pytest.raises(TypeError, match="4-byte"):
        fn((1,), (8,), (x, y, np.int64(8)))            # the wrong width
    with pytest.raises(TypeError, match="C-contiguous array of 8-byte items"):
        fn((1,), (8,), (x.astype(np.float32), y, np.int32(8)))
    with pytest.raises(TypeError, match="C-contiguous"):
        fn((1,), (8,), (np.zeros(16)[::2], y, np.int32(8)))
    with pytest.raises(TypeError, match="takes 3 arguments"):
        fn((1,), (8,), (x, y))


def test_primitive_raises_its_shared_memory_limit_or_fails_clearly(rng):
    """weight_grad with a forced 16x16 tile needs (256 + 256) * itemsize bytes of shared
    memory: above the default limit it raises the function's limit (as on a GPU); above
    the opt-in limit it fails."""
    g = rng.standard_normal((1, 1, 16, 16))
    orient = parse_orientation("TL")
    small = EmulatorDevice(max_shared_memory_per_block=1024)
    want = kernel_conv.weight_grad(EmulatorDevice(), g, g, (1, 1), orient)
    np.testing.assert_allclose(kernel_conv.weight_grad(small, g, g, (1, 1), orient, tile=(16, 16)), want,
                               rtol=1e-12)
    assert small.function("conv", "conv_weight_grad_partial", "float64", "int32").max_dynamic_shared_size_bytes == 4096
    tiny_device = EmulatorDevice(max_shared_memory_per_block=1024, max_shared_memory_per_block_optin=1024)
    with pytest.raises(ValueError, match="conv.conv_weight_grad_partial needs 4096 bytes of shared memory"):
        kernel_conv.weight_grad(tiny_device, g, g, (1, 1), orient, tile=(16, 16))


def test_index_type_follows_sizes():
    device = EmulatorDevice()
    assert kernel_launch.index_type(device, 10, 2**31 - 1) == "int32"
    assert kernel_launch.index_type(device, 10, 2**31) == "int64"
    device.index64 = True
    assert kernel_launch.index_type(device, 10) == "int64"


def test_compile_errors_carry_the_log():
    with pytest.raises(KernelCompileError, match="error: expected unqualified-id"):
        build("this is not C++;\n")


BUILTINS = textwrap.dedent("""
    extern "C" __global__ void tiny_builtins(
        const double* x, double* y, double* dsum, float* fsum, int* isum, unsigned long long* usum,
        int* lowest, int* highest, int* first, int* counts)
    {
        __shared__ int arrived;
        IC_DYNAMIC_SHARED(double, s);
        const unsigned nt = blockDim.x * blockDim.y;
        const unsigned t = threadIdx.y * blockDim.x + threadIdx.x;
        const unsigned b = blockIdx.y * gridDim.x + blockIdx.x;
        const int k = (int)(b * nt + t);
        if (t == 0) arrived = 0;
        __syncthreads();
        atomicAdd(&arrived, 1);
        s[t] = __ldg(x + k);
        __syncthreads();
        y[k] = s[(t + 1) % nt];
        atomicAdd(dsum, y[k]);
        atomicAdd(fsum, 1.0f);
        atomicAdd(usum, 1ull);
        atomicSub(isum, 1);
        atomicMin(lowest, k);
        atomicMax(highest, max(k, 0u));
        atomicCAS(first, -1, (int)b);
        __threadfence();
        if (t == 0) atomicExch(counts + b, arrived);
    }
""")


def test_shim_builtins_run_on_the_cpu_and_compile_with_nvrtc():
    """Every built-in the shim claims, in one kernel: right results on the CPU, and the
    same text compiles for a GPU."""
    device = EmulatorDevice(transform=lambda family, text: text + BUILTINS)
    grid, block = (3, 2), (4, 8)
    n = 6 * 32
    x, y = np.random.default_rng().standard_normal(n), np.full(n, np.nan)
    dsum, fsum, isum, usum = np.zeros(1), np.zeros(1, np.float32), np.zeros(1, np.int32), np.zeros(1, np.uint64)
    lowest, highest, first = np.array([n], np.int32), np.array([-1], np.int32), np.array([-1], np.int32)
    counts = np.zeros(6, np.int32)
    device.function("conv", "tiny_builtins", "float64", "int32")(
        grid, block, (x, y, dsum, fsum, isum, usum, lowest, highest, first, counts), shared_mem=32 * 8)
    np.testing.assert_array_equal(y, np.roll(x.reshape(6, 32), -1, axis=1).ravel())
    assert dsum[0] == pytest.approx(x.sum()) and fsum[0] == n and isum[0] == -n and usum[0] == n
    assert (lowest[0], highest[0]) == (0, n - 1) and 0 <= first[0] < 6 and (counts == 32).all()
    cupy = pytest.importorskip("cupy")  # noqa: F841
    from invconv_cupy import check_kernels

    ok, ptx, log = check_kernels.compile_ptx(
        check_kernels._nvrtc(), kernel_source.source("conv", "float64", "int32") + BUILTINS, "builtins.cu", 80)
    assert ok and ".entry tiny_builtins" in ptx, log


def test_a_missing_compiler_is_reported(monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with pytest.raises(KernelCompileError, match="needs a C\\+\\+20 compiler"):
        build("int x;\n")


_BUILD = """
import sys
from invconv_cupy.emulator.build import build
print(build(open(sys.argv[1]).read()))
"""


def test_library_cache_is_safe_with_concurrent_processes(tmp_path, monkeypatch):
    """Two processes build the same source into a fresh cache: one library, no leftovers. (The cache
    holds the runtime's object, as after any first build: the processes race on the library.)"""
    source = tmp_path / "k.cpp"
    source.write_text(emulator_source(TINY, ["tiny_order", "tiny_rotate"]))
    cache = tmp_path / "cache" / "emulator"
    cache.mkdir(parents=True)
    runtime = shutil.copy(runtime_object(), cache)
    monkeypatch.setenv("INVCONV_CUPY_CACHE_DIR", str(tmp_path / "cache"))
    env = dict(os.environ)
    procs = [subprocess.Popen([sys.executable, "-c", _BUILD, str(source)], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    paths = {p.communicate()[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(paths) == 1
    assert sorted(cache.iterdir()) == sorted([Path(paths.pop()), Path(runtime)])
    before = {p: p.stat().st_mtime_ns for p in cache.iterdir()}
    build(source.read_text())                                      # a cache hit: nothing rebuilt
    assert {p: p.stat().st_mtime_ns for p in cache.iterdir()} == before
