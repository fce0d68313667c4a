"""The solve kernels on a real GPU (``-m gpu``; skipped without CUDA): larger shapes than the
emulator can afford, checked against the NumPy path, every path forced, the tiled path on a
4096 x 4096 image, 64-bit indexing past 2^31 elements, and no host synchronization (the calls
are captured into a CUDA graph, which fails on any synchronization)."""

import numpy as np
import pytest

import invconv_cupy as ic
from conftest import DTYPES, ORIENTATIONS, assert_close, make_weight
from solve_paths import PATHS, limits_for

cupy = pytest.importorskip("cupy")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not cupy.cuda.is_available(), reason="needs a CUDA device")]


def _device():
    from invconv_cupy.backends import cupy_backend

    return cupy_backend.device


class LimitedDevice:
    """The CuPy device with a lower shared-memory limit (to force a path)."""

    def __init__(self, device, shared_limit):
        self._device = device
        self.max_shared_memory_per_block_optin = shared_limit

    def __getattr__(self, name):
        return getattr(self._device, name)


def _case(rng, shape, orientation, dtype):
    B, C, H, W, KH, KW = shape
    w = make_weight(rng, C, KH, KW, orientation, dtype)
    return w, rng.standard_normal((B, C, H, W)).astype(dtype), rng.standard_normal((B, C, H, W)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("shape", [(8, 12, 32, 32, 3, 3), (3, 5, 17, 23, 2, 3), (2, 48, 16, 16, 3, 3)],
                         ids=lambda s: "x".join(map(str, s)))
def test_solve_and_solve_vjp_match_numpy(rng, shape, orientation, dtype):
    w, y, g = _case(rng, shape, orientation, dtype)
    x = ic.solve(cupy.asarray(y), cupy.asarray(w), orientation)
    assert isinstance(x, cupy.ndarray) and x.dtype == dtype
    expected = ic.solve(y, w, orientation)
    assert_close(cupy.asnumpy(x), expected, dtype)
    grad_y, grad_w = ic.solve_vjp(cupy.asarray(g), cupy.asarray(expected), cupy.asarray(w), orientation)
    want_y, want_w = ic.solve_vjp(g, expected, w, orientation)
    assert_close(cupy.asnumpy(grad_y), want_y, dtype)
    assert_close(cupy.asnumpy(grad_w), want_w, dtype, scale=max(1.0, float(np.abs(want_w).max())))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_path(rng, path, dtype):
    from invconv_cupy.backends import kernel_solve, numpy_backend
    from invconv_cupy.orientation import parse_orientation

    B, C, H, W, KH, KW = 3, 6, 40, 37, 3, 2
    limit, options, how = limits_for(path, (B, C, H, W), (KH, KW), np.dtype(dtype).itemsize,
                                      max_threads=kernel_solve.MAX_THREADS, small_tile=8,
                                      start=_device().max_shared_memory_per_block_optin)
    assert how.tiles_h * how.tiles_w > 1 if PATHS[path][0] else how.tiles_h * how.tiles_w == 1
    device = LimitedDevice(_device(), limit)
    for orientation in ORIENTATIONS:
        w, y, g = _case(rng, (B, C, H, W, KH, KW), orientation, dtype)
        orient = parse_orientation(orientation)
        for transpose, data in ((False, y), (True, g)):
            got = kernel_solve.solve(device, cupy.asarray(data), cupy.asarray(w), orient, transpose, **options)
            assert_close(cupy.asnumpy(got), numpy_backend.solve(data, w, orient, transpose), dtype)


@pytest.mark.parametrize("orientation", ["TL", "BR"])
def test_tiled_4096_image(rng, orientation):
    """1 x 3 x 4096 x 4096, float32: the top-left (in the solve's frame) 256 x 256 corner depends
    only on the same corner of y, so it is checked against NumPy; the whole image by its residual."""
    from invconv_cupy.backends import kernel_solve

    w = make_weight(rng, 3, 3, 3, orientation, np.float32)
    y = cupy.random.default_rng(int(rng.integers(2**31))).standard_normal((1, 3, 4096, 4096), dtype=np.float32)
    how = kernel_solve.plan(y.shape, (3, 3), 4, shared_limit=_device().max_shared_memory_per_block_optin)
    assert how.tiles_h > 1 and how.tiles_w > 1
    x = ic.solve(y, cupy.asarray(w), orientation)
    corner = (slice(None), slice(None), slice(0, 256) if orientation == "TL" else slice(-256, None),
              slice(0, 256) if orientation == "TL" else slice(-256, None))
    assert_close(cupy.asnumpy(x[corner]), ic.solve(cupy.asnumpy(y[corner]), w, orientation), np.float32)
    residual = float(cupy.abs(ic.conv(x, cupy.asarray(w), orientation) - y).max())
    assert residual < 1e-3 * max(1.0, float(cupy.abs(y).max()))


@pytest.mark.slow
def test_64_bit_indexing_past_2_31_elements(rng):
    B, C, H, W = 2**21 + 1, 1, 32, 32  # 2^31 + 1024 elements
    if cupy.cuda.Device().mem_info[0] < 24 * 2**30:
        pytest.skip("needs 24 GiB of free GPU memory")
    w = make_weight(rng, C, 3, 3, "TL", np.float32)
    y = cupy.random.default_rng(int(rng.integers(2**31))).standard_normal((B, C, H, W), dtype=np.float32)
    assert y.size > 2**31 - 1
    x = ic.solve(y, cupy.asarray(w))
    for part in (slice(0, 2), slice(B - 2, B)):
        assert_close(cupy.asnumpy(x[part]), ic.solve(cupy.asnumpy(y[part]), w), np.float32)
    del x, y
    cupy.get_default_memory_pool().free_all_blocks()


def _capture(fn):
    """Run ``fn`` once eagerly, then capture it into a CUDA graph on a fresh stream and replay it;
    returns (eager result, replayed result). Capture fails if ``fn`` synchronizes with the host."""
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        eager = fn()
        stream.synchronize()
        stream.begin_capture()
        captured = fn()
        graph = stream.end_capture()
        graph.launch(stream)
        stream.synchronize()
    return eager, captured


def test_solve_and_solve_vjp_never_synchronize_the_host(rng):
    w, y, g = _case(rng, (4, 6, 20, 24, 3, 3), "TR", np.float32)
    w, y, g = cupy.asarray(w), cupy.asarray(y), cupy.asarray(g)
    eager, captured = _capture(lambda: ic.solve(y, w, "TR", check=False))
    cupy.testing.assert_array_equal(eager, captured)
    x = eager
    eager, captured = _capture(lambda: ic.solve_vjp(g, x, w, "TR", check=False))
    for a, b in zip(eager, captured):
        cupy.testing.assert_array_equal(a, b)
