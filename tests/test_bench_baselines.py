"""The GPU benchmark's own kernels and logic, checked without a GPU.

``bench/baselines.cu`` (the launch-per-step baselines) and ``bench/solve_v1.cu``
(the v1 solve kernel) compile with NVRTC and, under the emulator, solve exactly;
``bench/gpu_bench.py --dry-run`` runs; the ratios are our time over theirs; the
float64 references the timed outputs are checked against are right.
"""

import ctypes
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import invconv_cupy as ic
from conftest import assert_close, make_weight
from invconv_cupy.emulator import EmulatedFunction, EmulatorDevice
from invconv_cupy.emulator.build import build, emulator_source
from oracle import Dense

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import gpu_baselines  # noqa: E402
import gpu_bench  # noqa: E402
import gpu_cases  # noqa: E402
import gpu_measure  # noqa: E402
import gpu_reference  # noqa: E402
import solve_v1  # noqa: E402


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_baseline_kernels_compile_with_nvrtc(dtype):
    from invconv_cupy import check_kernels

    try:
        nvrtc = check_kernels._nvrtc()
    except Exception as exc:  # no NVRTC library in this environment
        pytest.skip(f"NVRTC unavailable: {exc}")
    for arch in check_kernels.DEFAULT_ARCHS:
        ok, ptx, log = check_kernels.compile_ptx(nvrtc, gpu_baselines.source(dtype), "baselines.cu", arch)
        assert ok, log
        for entry in gpu_baselines.ENTRIES:
            assert re.search(rf"\.entry\s+{entry}\s*\(", ptx), entry


def test_solve_v1_compiles_with_nvrtc():
    from invconv_cupy import check_kernels

    try:
        nvrtc = check_kernels._nvrtc()
    except Exception as exc:  # no NVRTC library in this environment
        pytest.skip(f"NVRTC unavailable: {exc}")
    for arch in check_kernels.DEFAULT_ARCHS:
        ok, ptx, log = check_kernels.compile_ptx(nvrtc, solve_v1.source("float32", "int32"), "solve_v1.cu", arch)
        assert ok, log
        for G in solve_v1.OUTPUTS_PER_THREAD:
            assert re.search(rf"\.entry\s+solve_tiles_g{G}\s*\(", ptx)


@pytest.mark.parametrize("max_tile", [None, 2])
def test_solve_v1_baseline_solves_exactly(rng, max_tile):
    """The v1 kernel as the benchmark launches it (its single-launch and its tiled path)."""
    from invconv_cupy.orientation import parse_orientation

    B, C, H, W, K = 2, 3, 5, 6, 3
    w = make_weight(rng, C, K, K, "TL")
    y = rng.standard_normal((B, C, H, W))
    device = solve_v1.V1Device(EmulatorDevice(max_threads_per_block=64))
    x = solve_v1.solve(device, y, w, parse_orientation("TL"), max_tile=max_tile)
    assert_close(x, Dense(w, H, W, "TL").solve(y), np.float64)
    how = solve_v1.plan(y.shape, (K, K), 8, shared_limit=227 * 1024, max_threads=64, max_tile=max_tile)
    assert how.launches == (1 if max_tile is None else 3 + 3 - 1)   # one per tile anti-diagonal


def _emulated_functions(dtype):
    device = EmulatorDevice()
    library = ctypes.CDLL(str(build(emulator_source(gpu_baselines.source(dtype), gpu_baselines.ENTRIES))))
    return {name: EmulatedFunction(device, library, name) for name in gpu_baselines.ENTRIES}


@pytest.mark.parametrize("scheme", gpu_baselines.SCHEMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_launch_per_step_baselines_solve_exactly(rng, scheme, dtype):
    B, C, H, W, KH, KW = 3, 5, 4, 6, 3, 2
    w = make_weight(rng, C, KH, KW, "TL", dtype)
    y = rng.standard_normal((B, C, H, W)).astype(dtype)
    syncs = []
    solver = gpu_baselines.PerStepSolver(_emulated_functions(np.dtype(dtype).name), np, scheme,
                                         synchronize=lambda: syncs.append(1))
    x = solver(y, w)
    assert_close(x, Dense(w, H, W, "TL").solve(y), dtype)
    # the paper's scheme: ceil(C/4) launches per anti-diagonal, each followed by a synchronization
    expected_syncs = gpu_baselines.step_launches(scheme, y.shape) if scheme == "per_diagonal" else 0
    assert len(syncs) == expected_syncs
    assert gpu_baselines.step_launches("per_diagonal", y.shape) == (H + W - 1) * 2


def test_unknown_scheme_is_refused():
    with pytest.raises(ValueError, match="scheme"):
        gpu_baselines.PerStepSolver({"baseline_prepare": None, "baseline_step": None}, np, "per_pixel")


def test_dry_run_prints_every_case_plan(capsys):
    assert gpu_bench.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    for name in gpu_bench.CASES:
        assert name in out
    assert out.count("our launches 2,") == len(gpu_bench.CASES)  # the preparation and one persistent launch


def test_headline_ratios_divide_our_median_by_theirs():
    medians = {"solve": 0.02, "conv2d": 0.01, "per_diagonal": 4.0, "per_step": 0.2, "solve_vjp": 0.09,
               "conv2d_backward": 0.03}
    ratios, goals = gpu_bench.headline_ratios({"medians_ms": medians})
    assert ratios == pytest.approx({"solve_vs_conv2d": 2.0, "solve_vs_per_diagonal": 0.005, "solve_vs_per_step": 0.1,
                                    "solve_vjp_vs_conv2d_backward": 3.0})
    assert "solve_vs_cusparse" not in ratios and goals["solve_vs_cusparse"] == 0.1


def test_the_benchmarks_references_agree_with_torch_and_the_operator(rng):
    """gpu_reference (what every timed output is checked against) on CPU: the solve and its
    vjp are the operator's identities; conv2d "same" and its backward equal torch's."""
    torch = pytest.importorskip("torch")
    B, C, H, W, K = 2, 4, 6, 5, 3
    w = make_weight(rng, C, K, K, "TL")
    y, g = rng.standard_normal((2, B, C, H, W))
    x = gpu_reference.solve(y, w)
    np.testing.assert_allclose(ic.conv(x, w), y, atol=1e-12)
    grad_y, grad_w = gpu_reference.solve_vjp(g, x, w)
    np.testing.assert_allclose(ic.conv_vjp(grad_y, x, w)[0], g, atol=1e-12)           # grad_y = T^-T g
    np.testing.assert_allclose(grad_w, -ic.conv_vjp(grad_y, x, w)[1], atol=1e-12)
    xt, wt, gt = (torch.from_numpy(a).requires_grad_() for a in (x, w, g))
    out = torch.nn.functional.conv2d(xt, wt, padding="same")
    np.testing.assert_allclose(gpu_reference.conv2d_same(x, w), out.detach().numpy(), atol=1e-12)
    out.backward(gt)
    grad_input, grad_weight = gpu_reference.conv2d_same_backward(g, x, w)
    np.testing.assert_allclose(grad_input, xt.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(grad_weight, wt.grad.numpy(), atol=1e-12)


def test_relative_error_refuses_shape_mismatch_and_non_finite_values(rng):
    a = rng.standard_normal((3, 4))
    assert gpu_reference.relative_error(a, a) == 0.0
    assert gpu_reference.relative_error(a + 1e-3, a) == pytest.approx(1e-3 / max(1.0, np.abs(a).max()))
    assert gpu_reference.relative_error(a[:2], a) == float("inf")
    b = a.copy()
    b[1, 2] = np.nan
    assert gpu_reference.relative_error(b, a) == float("inf")


def test_every_ratio_names_measurements_the_benchmark_takes():
    measured = {m.label for m in gpu_cases.MEASUREMENTS}
    for case in gpu_cases.CASES.values():                       # labels are unique within a case
        labels = [m.label for m in gpu_cases.MEASUREMENTS if m.applies(case)]
        assert len(labels) == len(set(labels)) and "solve" in labels
    for spec in (gpu_cases.RATIOS, gpu_cases.GRAPH_RATIOS):
        for ours, theirs, _ in spec.values():
            assert ours in measured and theirs in measured
    for ours, theirs in gpu_cases.CASE_RATIOS.values():
        assert ours in measured and theirs in measured
    assert set(gpu_measure.REFERENCES) >= {m.expect for m in gpu_cases.MEASUREMENTS}
