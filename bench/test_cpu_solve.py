"""CPU: our NumPy solve against scipy.sparse.linalg.spsolve_triangular on the same system.

3x3 kernels: B=8, C=3, 256x256 in float64 (a large image), and the two shapes of
bench/test_torch_adapter.py in float32 (64x16x8x8: small images in a large batch, where
the solve's fixed costs per call and per anti-diagonal show; 100x12x32x32). scipy gets
all right-hand sides in one call and a prebuilt CSR matrix in float64 (its build time is
not counted).

    pytest bench/test_cpu_solve.py --benchmark-enable
"""

import numpy as np
import pytest
import scipy.sparse.linalg as spl

import invconv_cupy as ic
from sparse_system import from_columns, to_columns, triangular_matrix

K = 3
CASES = [(8, 3, 256, 256, np.float64), (64, 16, 8, 8, np.float32), (100, 12, 32, 32, np.float32)]
case_id = lambda c: "x".join(map(str, c[:4])) + f"-{np.dtype(c[4]).name}"  # noqa: E731


@pytest.fixture(scope="module", params=CASES, ids=case_id)
def system(request):
    B, C, H, W, dtype = request.param
    rng = np.random.default_rng(0)
    w = rng.uniform(-1, 1, (C, C, K, K)) * 0.5 / (C * K * K)
    w[:, :, -1, -1] = np.tril(w[:, :, -1, -1], -1) + np.diag(rng.uniform(1, 2, C))
    y = rng.standard_normal((B, C, H, W))
    group = f"cpu solve {case_id(request.param)} k{K}"
    return w.astype(dtype), y.astype(dtype), triangular_matrix(w, H, W), group


def _tolerance(dtype):
    return 1e-9 if dtype == np.float64 else 1e-4


def test_numpy_solve(benchmark, system):
    w, y, _, group = system
    benchmark.group = group
    benchmark.extra_info["role"] = "ours"
    x = benchmark(ic.solve, y, w)
    np.testing.assert_allclose(ic.conv(x, w), y, atol=_tolerance(y.dtype))


def test_scipy_spsolve_triangular(benchmark, system):
    w, y, T, group = system
    benchmark.group = group
    benchmark.extra_info["role"] = "scipy spsolve_triangular"
    rhs = to_columns(y.astype(np.float64))
    x = benchmark(spl.spsolve_triangular, T, rhs, lower=True)
    np.testing.assert_allclose(from_columns(x, y.shape), ic.solve(y, w), atol=_tolerance(y.dtype))
