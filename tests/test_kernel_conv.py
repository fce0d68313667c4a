"""The convolution kernels (kernels/conv.cu) through the public API.

Every test body runs under ``emulate`` (the kernels compiled for the CPU, small
shapes) and, on a GPU, under ``cupy`` (``gpu`` marker) with larger shapes too.
"""

import importlib

import numpy as np
import pytest

import invconv_cupy as ic
from conftest import DTYPES, ODD_SHAPES, ORIENTATIONS, assert_close, make_weight
from invconv_cupy.orientation import parse_orientation
from kernel_backends import KERNEL_BACKENDS, to_backend, to_host
from oracle import Dense

# B*H*W > 256: the weight gradient sums several partial blocks. The emulator runs
# every thread of a block as an OS thread, so its shapes stay small.
CHUNKED = (1, 2, 16, 17, 2, 2)
# larger shapes compared against the NumPy path
LARGE = {
    "emulate": [CHUNKED],
    "cupy": [(4, 8, 64, 48, 3, 3), (2, 3, 257, 129, 5, 2), (16, 2, 32, 32, 1, 1)],
}


def _backend_module(name):
    return importlib.import_module(f"invconv_cupy.backends.{name}_backend")


def _inputs(rng, shape, orientation, dtype):
    B, C, H, W, KH, KW = shape
    w = make_weight(rng, C, KH, KW, orientation, dtype)
    x, g = rng.standard_normal((2, B, C, H, W)).astype(dtype)
    return x, g, w


def _conv_and_vjp(backend, x, g, w, orientation):
    xb, gb, wb = to_backend(backend, x, g, w)
    y = ic.conv(xb, wb, orientation, backend=backend)
    assert y.dtype == x.dtype and y.shape == x.shape and y.flags.c_contiguous
    gx, gw = ic.conv_vjp(gb, xb, wb, orientation, backend=backend)
    return to_host(y), to_host(gx), to_host(gw)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("shape", ODD_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_conv_and_vjp_match_dense_oracle(rng, backend, shape, orientation, dtype):
    x, g, w = _inputs(rng, shape, orientation, dtype)
    dense = Dense(w, *x.shape[2:], orientation)
    y, gx, gw = _conv_and_vjp(backend, x, g, w, orientation)
    ex, ew = dense.conv_vjp(g, x)
    assert_close(y, dense.conv(x), dtype)
    assert_close(gx, ex, dtype)
    assert_close(gw, ew, dtype)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_weight_grad_scale_matches_numpy_path(rng, backend, orientation):
    """``weight_grad(..., scale=-1.0)`` as solve_vjp calls it: negated, masked entries zero."""
    x, g, w = _inputs(rng, CHUNKED, orientation, np.float64)
    orient = parse_orientation(orientation)
    xb, gb = to_backend(backend, x, g)
    got = to_host(_backend_module(backend).weight_grad(gb, xb, w.shape[2:], orient, scale=-1.0))
    want = _backend_module("numpy").weight_grad(g, x, w.shape[2:], orient, scale=-1.0)
    assert_close(got, want, np.float64)
    a, e = orient.anchor(*w.shape[2:])
    assert np.all(np.triu(got[:, :, a, e], 1) == 0)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_larger_shapes_match_numpy_path(rng, backend, orientation, dtype):
    for shape in LARGE[backend]:
        x, g, w = _inputs(rng, shape, orientation, dtype)
        y, gx, gw = _conv_and_vjp(backend, x, g, w, orientation)
        ex, ew = ic.conv_vjp(g, x, w, orientation, backend="numpy")
        assert_close(y, ic.conv(x, w, orientation, backend="numpy"), dtype)
        assert_close(gx, ex, dtype)
        # a sum over B*H*W terms: float32 error grows with it
        assert_close(gw, ew, dtype, scale=max(1.0, float(np.abs(ew).max())) * (1 + (dtype == np.float32) * 9))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_64_bit_index_variant(rng, monkeypatch, backend):
    """The int64 kernels (used when sizes pass 2**31) compute the same as the int32 ones."""
    monkeypatch.setattr(_backend_module(backend).device, "index64", True)
    for orientation in ORIENTATIONS:
        x, g, w = _inputs(rng, (2, 3, 4, 5, 3, 2), orientation, np.float64)
        dense = Dense(w, 4, 5, orientation)
        y, gx, gw = _conv_and_vjp(backend, x, g, w, orientation)
        ex, ew = dense.conv_vjp(g, x)
        assert_close(y, dense.conv(x), np.float64)
        assert_close(gx, ex, np.float64)
        assert_close(gw, ew, np.float64)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_grad_weight_is_bitwise_reproducible(rng, backend):
    """No float atomics: repeated runs agree bit for bit (the emulator also shuffles the
    block order on every launch)."""
    shape = CHUNKED if backend == "emulate" else (8, 16, 96, 96, 3, 3)
    x, g, w = _inputs(rng, shape, "BL", np.float32)
    xb, gb, wb = to_backend(backend, x, g, w)
    runs = [to_host(ic.conv_vjp(gb, xb, wb, "BL", backend=backend)[1]) for _ in range(4)]
    for other in runs[1:]:
        assert other.tobytes() == runs[0].tobytes()


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_strided_inputs(rng, backend):
    """Kernels ignore strides: the primitives make inputs contiguous first."""
    w = make_weight(rng, 3, 3, 2, "BR")
    base = rng.standard_normal((2, 6, 8, 7))
    (xb,) = to_backend(backend, base)
    xb = xb[:, ::2, ::-2, 1:6]
    wb = to_backend(backend, np.asfortranarray(w))[0]
    x = base[:, ::2, ::-2, 1:6]
    dense = Dense(w, 4, 5, "BR")
    assert_close(to_host(ic.conv(xb, wb, "BR", backend=backend)), dense.conv(x), np.float64)
    gx, gw = ic.conv_vjp(xb, xb, wb, "BR", backend=backend)
    ex, ew = dense.conv_vjp(x, x)
    assert_close(to_host(gx), ex, np.float64)
    assert_close(to_host(gw), ew, np.float64)


def test_emulator_outputs_start_as_nan():
    """Fresh emulator outputs are poisoned, so an element no kernel writes fails the oracle tests."""
    out = _backend_module("emulate").device.empty((2, 3), np.float32)
    assert np.isnan(out).all()


@pytest.mark.gpu
def test_past_2_31_elements_on_the_gpu(rng):
    """B*C*H*W > 2**31 takes the int64 kernels; checked at the end of the image, where a
    32-bit offset would have wrapped. Needs about 52 GB of GPU memory (float64)."""
    import cupy

    from invconv_cupy.backends import cupy_backend

    H, W = 2**16, 2**15 + 1
    w = make_weight(rng, 1, 2, 2)
    x_tail, g_tail = rng.standard_normal((2, 1, 1, 3, W))
    x = cupy.ones((1, 1, H, W))
    x[..., -3:, :] = cupy.asarray(x_tail)
    y = ic.conv(x, cupy.asarray(w))
    assert_close(y[..., -2:, :].get(), ic.conv(x_tail, w, backend="numpy")[..., 1:, :], np.float64)
    del y
    g = cupy.ones_like(x)
    g[..., -3:, :] = cupy.asarray(g_tail)
    grad_x, _ = ic.conv_vjp(g, x, cupy.asarray(w))
    want = ic.conv_vjp(g_tail, x_tail, w, backend="numpy")[0][..., 1:, :]
    assert_close(grad_x[..., -2:, :].get(), want, np.float64)
    del grad_x
    # all ones: tap (a, e) of the TL weight gradient counts its valid pixels, exactly
    x[...], g[...] = 1.0, 1.0
    got = cupy_backend.weight_grad(g, x, (2, 2), parse_orientation("TL")).get()
    counts = np.array([[(H - 1) * (W - 1), (H - 1) * W], [H * (W - 1), H * W]], dtype=np.float64)
    np.testing.assert_array_equal(got[0, 0], counts)
