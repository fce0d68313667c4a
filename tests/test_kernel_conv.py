"""The convolution kernels (kernels/conv.cu) through the public API.

Every test body runs under ``emulate`` (the kernels compiled for the CPU, small
shapes) and, on a GPU, under ``cupy`` (``gpu`` marker) with larger shapes too.
"""

import importlib

import numpy as np
import pytest

import invconv_cupy as ic
from conftest import DTYPES, ODD_SHAPES, ORIENTATIONS, assert_close, make_weight
from invconv_cupy.backends import kernel_conv
from invconv_cupy.emulator import EmulatorDevice
from invconv_cupy.orientation import parse_orientation
from kernel_backends import KERNEL_BACKENDS, to_backend, to_host
from oracle import Dense

# B*H*W > 256: the weight gradient sums several partial blocks. The emulator runs
# every thread of a block as an OS thread, so its shapes stay small.
CHUNKED = (1, 2, 16, 17, 2, 2)
# larger shapes compared against the NumPy path
LARGE = {
    "emulate": [CHUNKED],
    # C=48: the weight gradient splits its 20,736 parameters into groups (blockIdx.y)
    "cupy": [(4, 8, 64, 48, 3, 3), (2, 3, 257, 129, 5, 2), (16, 2, 32, 32, 1, 1), (3, 48, 21, 19, 3, 3)],
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


# The weight gradient's tiling (kernel_conv.weight_grad_plan) forced small on the
# emulator: (B, C, H, W, KH, KW), forced (tile, max_threads, target_blocks), and
# what the plan must then look like.
TILINGS = {
    # 4 x 3 tiles per image, 36 items over 5 blocks: each block loops over items
    "several tiles per block": ((3, 2, 7, 9, 3, 2), dict(tile=(2, 4), target_blocks=5)),
    # 1x1 and 1x2 tiles: the 3x3 halo spans several neighbouring tiles
    "tiles inside the halo": ((2, 2, 4, 5, 3, 3), dict(tile=(1, 2))),
    "1x1 tiles": ((1, 3, 3, 4, 3, 3), dict(tile=(1, 1), target_blocks=4)),
    # C=5, 2x2: 5 rows of 5 thread slots; 8 (or 7) threads per block cut rows apart
    "parameter groups": ((2, 5, 5, 6, 2, 2), dict(max_threads=8, tile=(2, 3), target_blocks=12)),
    "groups across rows": ((1, 5, 4, 3, 2, 3), dict(max_threads=7, tile=(3, 2))),
    # tile edges past the image: 5x7 in 4x4 tiles
    "partial tiles": ((2, 3, 5, 7, 2, 2), dict(tile=(4, 4))),
}


def _tiled_plan(shape, options, itemsize=8, device=None):
    device = device or EmulatorDevice()
    B, C, H, W, KH, KW = shape
    return kernel_conv.weight_grad_plan(
        (B, C, H, W), (KH, KW), itemsize, shared_default=device.max_shared_memory_per_block,
        shared_limit=device.max_shared_memory_per_block_optin,
        max_threads=options.get("max_threads", kernel_conv.WG_MAX_THREADS), tile=options.get("tile"),
        target_blocks=options.get("target_blocks", kernel_conv.TARGET_BLOCKS))


def test_forced_tilings_have_the_structure_they_claim():
    """The cases below really have several tiles per block, groups, tiles smaller than the halo."""
    plans = {name: _tiled_plan(shape, options) for name, (shape, options) in TILINGS.items()}
    several = plans["several tiles per block"]
    assert several.items == 12 and several.blocks == 5
    assert plans["tiles inside the halo"].tile_h < 2 and plans["1x1 tiles"].items == 12
    for name in ("parameter groups", "groups across rows"):
        assert plans[name].groups > 1 and plans[name].g_channels > 1
    assert plans["groups across rows"].threads % plans["groups across rows"].row_slots != 0
    assert plans["partial tiles"].items == 4


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("case", list(TILINGS))
def test_weight_grad_tilings_match_dense_oracle(rng, case, orientation):
    shape, options = TILINGS[case]
    dtype = np.float32 if orientation in ("TR", "BL") else np.float64
    x, g, w = _inputs(rng, shape, orientation, dtype)
    orient = parse_orientation(orientation)
    got = kernel_conv.weight_grad(EmulatorDevice(), g, x, w.shape[2:], orient, scale=-0.5, **options)
    want = -0.5 * Dense(w, *x.shape[2:], orientation).conv_vjp(g, x)[1]
    assert got.dtype == dtype
    assert_close(got, want, dtype)
    a, e = orient.anchor(*w.shape[2:])
    assert np.all(np.triu(got[:, :, a, e], 1) == 0)


def test_weight_grad_tile_follows_shared_memory_limits(rng):
    """The tile shrinks to fit the default shared memory; when even a 1x1 tile does not,
    the launch raises the function's limit up to the opt-in limit; beyond it, ValueError."""
    shape = (2, 4, 6, 7, 3, 3)
    x, g, w = _inputs(rng, shape, "TR", np.float64)
    orient = parse_orientation("TR")
    want = Dense(w, 6, 7, "TR").conv_vjp(g, x)[1]
    # 1x1 tile: (4 + 4*9) * 8 = 320 bytes; the whole image: (4*42 + 4*8*9) * 8 = 3648 bytes
    for default, optin, tile in [(48 * 1024, 48 * 1024, (6, 7)), (1024, 1024, (3, 2)), (256, 320, (1, 1))]:
        device = EmulatorDevice(max_shared_memory_per_block=default, max_shared_memory_per_block_optin=optin)
        how = _tiled_plan(shape, {}, device=device)
        assert (how.tile_h, how.tile_w) == tile and how.shared_bytes <= optin
        assert_close(kernel_conv.weight_grad(device, g, x, (3, 3), orient), want, np.float64)
    fn = device.function("conv", "conv_weight_grad_partial", "float64", "int32")
    assert fn.max_dynamic_shared_size_bytes == 320
    with pytest.raises(ValueError, match="even for a 1x1 tile"):
        kernel_conv.weight_grad(EmulatorDevice(max_shared_memory_per_block=256, max_shared_memory_per_block_optin=300),
                                g, x, (3, 3), orient)


def test_weight_grad_plan_for_the_headline_and_many_channels():
    """B=100, C=12, 32x32, 3x3 float32: one group, no opt-in; C=48: groups, bounded partials."""
    headline = _tiled_plan((100, 12, 32, 32, 3, 3), {}, itemsize=4)
    assert (headline.groups, headline.tile_h, headline.tile_w, headline.blocks) == (1, 16, 16, 400)
    assert headline.shared_bytes == 27840 <= 48 * 1024
    for C in (48, 256):
        wide = _tiled_plan((100, C, 32, 32, 3, 3), {}, itemsize=4)
        assert wide.groups > 1 and wide.threads <= kernel_conv.WG_MAX_THREADS
        assert wide.blocks * C * C * 9 <= max(kernel_conv.MAX_PARTIAL, C * C * 9)
        assert wide.blocks * wide.groups <= kernel_conv.TARGET_BLOCKS


def test_tiled_weight_grad_is_bitwise_reproducible(rng):
    """Several blocks, several items per block and parameter groups: the emulator shuffles
    the block order on every launch, the results agree bit for bit."""
    x, g, w = _inputs(rng, (3, 5, 6, 7, 2, 3), "BR", np.float32)
    orient = parse_orientation("BR")
    device = EmulatorDevice()
    runs = [kernel_conv.weight_grad(device, g, x, (2, 3), orient, max_threads=16, tile=(2, 3), target_blocks=9)
            for _ in range(4)]
    for other in runs[1:]:
        assert other.tobytes() == runs[0].tobytes()


# conv_apply_tiled with forced tiles: (B, C, H, W, KH, KW), tile
CONV_TILINGS = {
    "tiles inside the halo": ((2, 2, 5, 4, 3, 3), (1, 2)),
    "partial tiles": ((1, 3, 7, 5, 2, 3), (3, 2)),
    "1x1 tiles": ((2, 2, 3, 3, 2, 2), (1, 1)),
}


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("case", list(CONV_TILINGS))
def test_conv_tilings_match_dense_oracle(rng, case, orientation):
    """T x and T^T g through conv_apply_tiled with tiles smaller than the image and the halo."""
    shape, tile = CONV_TILINGS[case]
    dtype = np.float32 if orientation in ("TL", "BR") else np.float64
    x, g, w = _inputs(rng, shape, orientation, dtype)
    orient = parse_orientation(orientation)
    dense = Dense(w, *x.shape[2:], orientation)
    device = EmulatorDevice()
    assert_close(kernel_conv.conv(device, x, w, orient, tile=tile), dense.conv(x), dtype)
    assert_close(kernel_conv.conv(device, g, w, orient, transpose=True, tile=tile), dense.conv_vjp(g, x)[0], dtype)


def test_conv_falls_back_to_the_untiled_kernel_when_weights_do_not_fit(rng):
    """C=4, 3x3 float64: the weights alone are 1152 bytes. Below the default limit the tile
    shrinks, above it the launch raises the limit, without room the untiled kernel runs."""
    x, g, w = _inputs(rng, (2, 4, 5, 6, 3, 3), "BL", np.float64)
    orient = parse_orientation("BL")
    dense = Dense(w, 5, 6, "BL")
    for default, optin, want in [(48 * 1024, 48 * 1024, (5, 6)), (2048, 2048, (3, 3)), (1024, 1600, (2, 1)),
                                 (1024, 1400, None)]:
        device = EmulatorDevice(max_shared_memory_per_block=default, max_shared_memory_per_block_optin=optin)
        how = kernel_conv.conv_tile(x.shape, (3, 3), 8, shared_default=default, shared_limit=optin)
        assert (how and how[:2]) == want
        assert_close(kernel_conv.conv(device, x, w, orient), dense.conv(x), np.float64)
        assert_close(kernel_conv.conv(device, g, w, orient, transpose=True), dense.conv_vjp(g, x)[0], np.float64)


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
