"""CPU: our NumPy solve against scipy.sparse.linalg.spsolve_triangular on the same system.

B=8, C=3, 256x256, 3x3 kernel, float64; scipy gets all right-hand sides in one
call and a prebuilt CSR matrix (its build time is not counted).

    pytest bench/test_cpu_solve.py --benchmark-enable
"""

import numpy as np
import pytest
import scipy.sparse.linalg as spl

import invconv_cupy as ic
from sparse_system import from_columns, to_columns, triangular_matrix

B, C, H, W, K = 8, 3, 256, 256, 3


@pytest.fixture(scope="module")
def system():
    rng = np.random.default_rng(0)
    w = rng.uniform(-1, 1, (C, C, K, K)) * 0.5 / (C * K * K)
    w[:, :, -1, -1] = np.tril(w[:, :, -1, -1], -1) + np.diag(rng.uniform(1, 2, C))
    y = rng.standard_normal((B, C, H, W))
    return w, y, triangular_matrix(w, H, W)


def test_numpy_solve(benchmark, system):
    w, y, _ = system
    benchmark.group = "cpu solve 8x3x256x256 k3 float64"
    benchmark.extra_info["role"] = "ours"
    x = benchmark(ic.solve, y, w)
    np.testing.assert_allclose(ic.conv(x, w), y, atol=1e-9)


def test_scipy_spsolve_triangular(benchmark, system):
    w, y, T = system
    benchmark.group = "cpu solve 8x3x256x256 k3 float64"
    benchmark.extra_info["role"] = "scipy spsolve_triangular"
    rhs = to_columns(y)
    x = benchmark(spl.spsolve_triangular, T, rhs, lower=True)
    np.testing.assert_allclose(from_columns(x, y.shape), ic.solve(y, w), atol=1e-9)
