"""bench/solve_sass.py's SASS reading, on a small kernel whose loop nest is known (NVRTC and
nvdisasm, no GPU); the full v1/v2 report is ``python bench/solve_sass.py`` (about a minute)."""

import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

PROBE = textwrap.dedent("""
    extern "C" __global__ void probe(const float* a, float* out, int n, int m)
    {
        float acc = 0.0f;
        for (int j = 0; j < m; ++j) {
            for (int i = 0; i < n; ++i) {
                acc += a[i] * a[i + j];
            }
            out[j] = acc;
        }
    }
""")


def test_the_hot_loop_and_the_loop_around_it_are_found(tmp_path):
    solve_sass = pytest.importorskip("solve_sass")
    try:
        binary = solve_sass.cubin(PROBE, "probe.cu", 90)
        functions = solve_sass.disassemble(binary, tmp_path)
    except (solve_sass.ToolMissing, OSError, ImportError) as exc:
        pytest.skip(f"NVRTC or nvdisasm missing: {exc}")
    code = functions["probe"]
    fma_line = PROBE.splitlines().index("            acc += a[i] * a[i + j];") + 1   # 1-based
    found = solve_sass.step_code(code, "probe", fma_line, 1, ("item",))
    assert found.per_iteration_kinds["fma"] == 1 and found.per_iteration_kinds["load"] == 2
    assert found.hot_loop_body == found.per_iteration * found.hot_loop_iterations
    assert 0 < found.around["item"] < len(code) and found.local_memory == 0
    spans = solve_sass.loops(code)
    assert len(spans) >= 2 and all(first <= last for first, last in spans)


HELPER = 'template <class T> __device__ __forceinline__ T twice(T v) { return v + v; }\n'
STEPS = textwrap.dedent("""
    __device__ void publish(float* out, int j, int n)
    {
        for (int i = 0; i < n; ++i) out[j * n + i] = twice(out[i]) * 3.0f + (float)j;
    }
    __device__ __forceinline__ void items(const float* a, float* out, int n, int j)
    {
        for (int r = threadIdx.x; r < n; r += blockDim.x) {
            float acc = 0.0f;
            for (int i = 0; i < n; ++i) {
                acc += a[i] * a[i + j + r];
            }
            out[j * n + r] = acc;
        }
    }
    extern "C" __global__ void steps(const float* a, const float* b, float* out, int n, int m)
    {
        for (int j = 0; j < m; ++j) {
            if (j & 1) items(a, out, n, j);
            else items(b, out, n + 1, j);
            if (threadIdx.x == 32) publish(out, j, n);
            __syncthreads();
        }
    }
""")


def test_the_step_counts_only_what_a_computing_thread_runs(tmp_path):
    """Another warp's code (``other_paths``) and the other copy of the item's function (``copy_lines``)
    are not the step's own instructions; a header's inlined helper keeps its caller's line."""
    solve_sass = pytest.importorskip("solve_sass")
    source = f'#line 1 "probe.cuh"\n{HELPER}#line 1 "steps.cu"\n{STEPS}'
    try:
        code = solve_sass.disassemble(solve_sass.cubin(source, "steps.cu", 90), tmp_path)["steps"]
    except (solve_sass.ToolMissing, OSError, ImportError) as exc:
        pytest.skip(f"NVRTC or nvdisasm missing: {exc}")
    fma_line = STEPS.splitlines().index("            acc += a[i] * a[i + j + r];") + 1
    assert {i.line for i in code} <= set(range(len(STEPS.splitlines()) + 1))   # no line of probe.cuh
    plain = solve_sass.step_code(code, "steps", fma_line, 1, ("item", "step"))
    own = solve_sass.step_code(code, "steps", fma_line, 1, ("item", "step"),
                               other_paths=solve_sass._function_lines(STEPS, "publish"),
                               copy_lines=solve_sass._function_lines(STEPS, "items"))
    publish_lines = solve_sass._function_lines(STEPS, "publish")
    assert sorted(publish_lines) == list(range(2, 6)) and any(i.line in publish_lines for i in code)
    assert own.around["item"] == plain.around["item"] and 0 < own.around["step"] < plain.around["step"]
    publish = sum(i.line in publish_lines for i in code)
    assert own.around["step"] <= plain.around["step"] - publish
    copies_only = solve_sass.step_code(code, "steps", fma_line, 1, ("item", "step"),
                                       copy_lines=solve_sass._function_lines(STEPS, "items"))
    assert publish <= copies_only.around["step"] < plain.around["step"]   # the publishing still counts
