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
