"""Kernel resources measured offline: ptxas's report through NVRTC, occupancy, the recorded launches.

The no-spill test compiles every entry point for sm_90 (the H100/H200 the
benchmark targets) in two variants: float32 with 32-bit indices (every benchmark
case) and float64 with 64-bit indices (the most registers). Compiling all four
variants for sm_80 and sm_90 takes about a minute of CPU: ``python -m
invconv_cupy.check_kernels --resources`` does that, and exits non-zero on the
same offenders.
"""

import io
import textwrap

import numpy as np
import pytest

from invconv_cupy import kernel_resources as kr
from invconv_cupy import kernel_source
from invconv_cupy.backends import kernel_conv, kernel_solve

H100 = kr.LIMITS[90]


@pytest.fixture(scope="module")
def nvrtc():
    pytest.importorskip("cupy")
    from invconv_cupy import check_kernels

    try:
        return check_kernels._nvrtc()
    except Exception as exc:  # no NVRTC library in this environment
        pytest.skip(f"NVRTC unavailable: {exc}")


VARIANTS = (("float32", "int32"), ("float64", "int64"))


@pytest.fixture(scope="module")
def sm90(nvrtc):
    runs = [kr.collect((90,), (dtype,), (index,)) for dtype, index in VARIANTS]
    return tuple(r for run in runs for r in run[0]), tuple(f for run in runs for f in run[1])


def test_no_kernel_spills_or_uses_local_memory(sm90):
    resources, failures = sm90
    assert failures == ()
    found = {(r.family, r.entry, r.dtype, r.index) for r in resources}
    every = {(f, e, d, i) for f in kernel_source.families() for e in kernel_source.entry_points(f)
             for d, i in VARIANTS}
    assert found == every
    assert all(r.entry.startswith(kr.NO_SPILL_PREFIXES) for r in resources)
    assert kr.offenders(resources) == [], "\n".join(map(str, kr.offenders(resources)))
    assert all(0 < r.registers <= 255 for r in resources)


SPILLER = textwrap.dedent("""
    extern "C" __global__ void conv_probe_local(ic_real* y, int k)
    {
        __shared__ ic_real s[64];
        ic_real buffer[32];                       // indexed at run time: local memory
        for (int i = 0; i < 32; ++i) buffer[i] = y[i * k];
        s[threadIdx.x & 63] = buffer[k & 31];
        __syncthreads();
        y[threadIdx.x] = s[(threadIdx.x + 1) & 63];
    }

    extern "C" __global__ void probe_other(ic_real* y) { y[threadIdx.x] += 1; }
""")


def test_local_memory_and_static_shared_memory_are_read_and_flagged(nvrtc):
    source = kernel_source.preamble("float64", "int32") + SPILLER
    ok, report, log = kr.compile_resources(nvrtc, source, "probe.cu", 80)
    assert ok, log
    probe = kr.EntryResources("conv", "conv_probe_local", "float64", "int32", 80, **report["conv_probe_local"])
    assert probe.local_bytes >= 32 * 8 and probe.static_shared == 64 * 8 and probe.barriers == 1
    other = kr.EntryResources("probe", "probe_other", "float64", "int32", 80, **report["probe_other"])
    assert other.local_bytes == 0 and other.static_shared == 0
    assert kr.offenders([probe, other]) == [probe]
    spiller = kr.EntryResources("solve", "solve_x", "float32", "int32", 90, 255, 8, 4, 0, 0, 1)
    assert kr.offenders([spiller]) == [spiller]


def test_parse_ptxas_log_reads_every_field():
    log = textwrap.dedent("""\
        ptxas info    : 0 bytes gmem
        ptxas info    : Compiling entry function 'solve_a' for 'sm_90'
        ptxas info    : Function properties for solve_a
        ptxas         .     16 bytes stack frame, 12 bytes spill stores, 8 bytes spill loads
        ptxas info    : Used 255 registers, used 1 barriers, 16 bytes cumulative stack size, 2048 bytes smem, 400 bytes cmem[0]
        ptxas info    : Compiling entry function 'conv_b' for 'sm_80'
        ptxas info    : Function properties for conv_b
        ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
        ptxas info    : Used 40 registers, 24 bytes lmem, 360 bytes cmem[0]
        """)
    parsed = kr.parse_ptxas_log(log)
    assert parsed["solve_a"] == {"registers": 255, "spill_stores": 12, "spill_loads": 8, "local_bytes": 16,
                                 "static_shared": 2048, "barriers": 1}
    assert parsed["conv_b"] == {"registers": 40, "spill_stores": 0, "spill_loads": 0, "local_bytes": 24,
                                "static_shared": 0, "barriers": 0}


def _res(registers, static_shared=0):
    return kr.EntryResources("f", "f_e", "float32", "int32", 90, registers, 0, 0, 0, static_shared, 1)


@pytest.mark.parametrize("registers, threads, shared, expect, binds", [
    # 8 warps/block; 32 regs -> 1024 per warp, 16 warps per quarter -> 64 warps: 8 blocks (threads tie);
    # no shared memory but the 1024 reserved bytes: 233472 // 1024 = 228
    (32, 256, 0, (8, 8, 228, 8), {"threads", "registers"}),
    # 255 regs -> 8160, rounded to 8192 per warp: 2 warps per quarter -> 8 warps -> 1 block of 8 warps
    (255, 256, 0, (8, 1, 228, 1), {"registers"}),
    # 224 threads = 7 warps; 56 regs -> 1792 per warp, 9 per quarter -> 36 warps -> 5 blocks;
    # 61248 + 1024 reserved -> 62336 (128-byte units): 233472 // 62336 = 3 blocks
    (56, 224, 61248, (9, 5, 3, 3), {"shared memory"}),
    # 64 threads: 2 warps; shared 0 -> 233472 // 1024 = 228; blocks per SM capped at 32
    (16, 64, 0, (32, 64, 228, 32), {"threads", "blocks"}),
])
def test_occupancy_by_hand(registers, threads, shared, expect, binds):
    occ = kr.occupancy(_res(registers), threads, shared, H100)
    assert (occ.by_threads, occ.by_registers, occ.by_shared, occ.blocks) == expect
    assert set(occ.binds) == binds
    assert occ.warps == occ.blocks * -(-threads // 32) and occ.fraction == occ.warps / 64


def test_launches_that_cannot_run_get_zero_blocks():
    assert kr.occupancy(_res(32), 2048, 0, H100).blocks == 0                        # too many threads
    assert kr.occupancy(_res(32), 64, 228 * 1024, H100).blocks == 0                 # past the opt-in limit
    assert kr.occupancy(_res(128), 1024, 0, H100).by_registers == 0                 # 128 x 1024 > 65536 per block


def test_recorded_launches_follow_the_primitives_plans():
    (B, C, H, W), (KH, KW), dtype = kr.HEADLINE
    launches = kr.case_launches((B, C, H, W), (KH, KW), dtype, H100)
    ops = {}
    for launch in launches:
        ops.setdefault(launch.operation, []).append(launch)
    how = kernel_solve.plan((B, C, H, W), (KH, KW), 4, shared_limit=H100.shared_per_block_optin)
    assert [launch.entry for launch in ops["solve"]] == ["solve_prepare", f"solve_wavefront_g{how.outputs_per_thread}"]
    prepare, solve = ops["solve"]
    assert (prepare.blocks, prepare.threads, prepare.shared_mem) == (how.prepare_grid, how.prepare_threads,
                                                                     how.prepare_shared_bytes)
    assert (solve.blocks, solve.threads, solve.shared_mem) == (how.grid, how.threads, how.shared_bytes)
    assert ops["solve_vjp"][1].shared_mem == how.shared_bytes
    th, tw, conv_shared = kernel_conv.conv_tile((B, C, H, W), (KH, KW), 4, shared_default=H100.shared_per_block,
                                                shared_limit=H100.shared_per_block_optin)
    assert ops["conv"][0].entry == "conv_apply_tiled" and ops["conv"][0].shared_mem == conv_shared
    assert ops["conv"][0].blocks == B * -(-H // th) * -(-W // tw)
    wg = kernel_conv.weight_grad_plan((B, C, H, W), (KH, KW), 4, shared_default=H100.shared_per_block,
                                      shared_limit=H100.shared_per_block_optin)
    partial = next(launch for launch in ops["solve_vjp"] if launch.entry == "conv_weight_grad_partial")
    assert (partial.grid, partial.threads, partial.shared_mem) == ((wg.blocks, wg.groups), wg.threads,
                                                                   wg.shared_bytes)
    assert {launch.dtype for launch in launches} == {dtype} and {launch.index for launch in launches} == {"int32"}


def test_resources_command_prints_both_tables(sm90, monkeypatch):
    """print_report (what ``--resources`` prints), on the fixture's compile of the headline variant."""
    from invconv_cupy import check_kernels

    headline = kr.collect((90,), ("float32",), ("int32",))
    monkeypatch.setattr(kr, "collect", lambda archs: headline)
    out = io.StringIO()
    assert kr.print_report((90,), out) == 0
    text = out.getvalue()
    rows = [line for line in text.splitlines() if line.startswith(("ok ", "FAIL"))]
    assert len(rows) == len(headline[0]) and all(line.startswith("ok ") for line in rows)
    assert "100x12x32x32, 3x3 kernel, float32 on H100/H200" in text
    solve_row = next(line for line in text.splitlines() if line.startswith("solve ") and "solve_wavefront_g" in line)
    assert solve_row.split()[-1] in ("memory", "threads", "registers", "blocks")   # the binding limit, last
    assert "0 compile failure(s), 0 entry point(s)" in text
    assert check_kernels.main(["--resources", "--arch", "90"]) == 0      # the command line, same compile


def test_collect_finds_an_entry_point_with_local_memory(monkeypatch, nvrtc):
    """An entry point added to a family that uses local memory is compiled, reported and flagged."""
    real = kernel_source.source
    monkeypatch.setattr(kernel_source, "source",
                        lambda f, d, i: real(f, d, i) + (SPILLER if f == "conv" else ""))
    monkeypatch.setattr(kernel_source, "entry_points",
                        lambda f, real=kernel_source.entry_points: real(f) + (("conv_probe_local",) if f == "conv"
                                                                              else ()))
    monkeypatch.setattr(kernel_source, "families", lambda: ("conv",))
    resources, failures = kr.collect.__wrapped__((80,), ("float64",), ("int32",))
    assert failures == ()
    assert [r.entry for r in kr.offenders(resources)] == ["conv_probe_local"]
    assert np.all([r.local_bytes == 0 for r in resources if r.entry != "conv_probe_local"])
