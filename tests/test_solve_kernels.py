"""kernels/solve.cu under the emulator: both paths, every orientation, both dtypes, odd shapes.

The paths are forced with small devices (a low shared-memory limit, small
tiles), and each test asserts the plan it meant to exercise. The emulator fills
outputs and shared memory with NaN, so an element no kernel writes (or a read of
shared memory nothing staged) fails the comparison with the dense float64 oracle.
"""

import numpy as np
import pytest

import invconv_cupy as ic
from invconv_cupy import kernel_source
from conftest import DTYPES, ORIENTATIONS, assert_close, make_weight
from invconv_cupy.backends import kernel_solve
from invconv_cupy.emulator import EmulatorDevice
from invconv_cupy.orientation import parse_orientation
from oracle import Dense, dense_matrix
from solve_paths import PATHS, SMALL_TILE, limits_for

# (B, C, H, W, KH, KW)
SHAPES = [
    (2, 3, 5, 4, 3, 2),
    (1, 1, 1, 1, 1, 1),
    (2, 2, 1, 1, 3, 2),  # kernel larger than the image
    (1, 3, 2, 6, 4, 5),  # kernel taller than the image
    (3, 1, 5, 3, 2, 1),  # C=1, rectangular kernel
    (1, 5, 7, 6, 2, 3),  # odd C: padded output groups
]
_devices = {}


def device(shared_limit=227 * 1024, index64=False):
    """An emulated device with 64 threads per block (fast on a CPU) and the given limits."""
    key = (shared_limit, index64)
    if key not in _devices:
        dev = EmulatorDevice(max_threads_per_block=64, max_shared_memory_per_block_optin=shared_limit)
        dev.index64 = index64
        _devices[key] = dev
    return _devices[key]


def _transposed_solve(dense, g):
    flat = np.asarray(g, dtype=np.float64).reshape(g.shape[0], -1)
    return np.linalg.solve(dense.T.T, flat.T).T.reshape(g.shape)


def _check_paths(rng, shape, orientation, dtype, path, outputs_per_thread=None):
    """Solve and transposed solve of a fresh case on ``path``; returns the plan, or None when
    ``shape`` has no such path."""
    B, C, H, W, KH, KW = shape
    found = limits_for(path, (B, C, H, W), (KH, KW), np.dtype(dtype).itemsize, max_threads=64,
                       outputs_per_thread=outputs_per_thread)
    if found is None:
        return None
    limit, options, how = found
    dev = device(limit)
    w = make_weight(rng, C, KH, KW, orientation, dtype)
    y, g = (rng.standard_normal((B, C, H, W)).astype(dtype) for _ in range(2))
    dense = Dense(w, H, W, orientation)
    orient = parse_orientation(orientation)
    x = kernel_solve.solve(dev, y, w, orient, **options)
    assert x.dtype == dtype and x.flags.c_contiguous
    assert_close(x, dense.solve(y), dtype)
    assert_close(kernel_solve.solve(dev, g, w, orient, True, **options), _transposed_solve(dense, g), dtype)
    return how


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_solve_and_transposed_solve_match_the_oracle_on_every_path(rng, path, dtype, orientation):
    plans = [_check_paths(rng, shape, orientation, dtype, path) for shape in SHAPES]
    one_pixel = sum(H * W == 1 for _, _, H, W, _, _ in SHAPES)
    assert sum(how is not None for how in plans) >= len(SHAPES) - (one_pixel if PATHS[path][0] else 0)


@pytest.mark.parametrize("path", ["tiled", "tiled_global"])
@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_images_of_many_tiles(rng, path, orientation):
    how = _check_paths(rng, (2, 3, 9, 11, 3, 2), orientation, np.float64, path)
    assert how.tiles_h * how.tiles_w == 5 * 6 and how.launches == 2 and how.grid > 1 and how.linked


@pytest.mark.parametrize("blocks,grain", [(1, None), (3, 1)])
def test_persistent_grid_smaller_than_the_tiles(rng, blocks, grain):
    """Fewer blocks than tiles: each block claims tiles until none is left, in dependency order,
    so any grid finishes (one block solves every tile of every image in turn)."""
    B, C, H, W, KH, KW = 3, 2, 7, 5, 3, 3
    w = make_weight(rng, C, KH, KW, "BL")
    y = rng.standard_normal((B, C, H, W))
    x = kernel_solve.solve(device(), y, w, parse_orientation("BL"), max_tile=2, max_blocks=blocks, grain=grain)
    assert_close(x, Dense(w, H, W, "BL").solve(y), np.float64)
    assert kernel_solve.plan((B, C, H, W), (KH, KW), 8, shared_limit=227 * 1024, max_threads=64, max_tile=2,
                             max_blocks=blocks).grid == blocks


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("grain", [1, 2, 3, 7])
def test_linked_tiles_publish_progress_at_every_grain(rng, dtype, grain):
    """Tiles hand over their border pixels every `grain` diagonals (7: only when a 4 x 4 tile is done), with
    a 3 x 4 kernel whose halo reaches two tile columns and the up-left corner tile; transposed too."""
    B, C, H, W, KH, KW = 2, 3, 9, 11, 3, 4
    how = kernel_solve.plan((B, C, H, W), (KH, KW), np.dtype(dtype).itemsize, shared_limit=227 * 1024,
                            max_threads=64, max_tile=2, grain=grain)
    assert how.linked and how.grain == grain and how.threads % 32 == 0
    for orientation, transpose in (("TL", False), ("BR", True)):
        w = make_weight(rng, C, KH, KW, orientation, dtype)
        y = rng.standard_normal((B, C, H, W)).astype(dtype)
        dense = Dense(w, H, W, orientation)
        x = kernel_solve.solve(device(), y, w, parse_orientation(orientation), transpose, max_tile=2, grain=grain)
        assert_close(x, _transposed_solve(dense, y) if transpose else dense.solve(y), dtype)


@pytest.mark.parametrize("max_tile", [None, 2])
@pytest.mark.parametrize("slots", [2, 3])
def test_several_images_per_block(rng, max_tile, slots):
    """A block solves `slots` images at once (5 images: the last group is partial), whole or in linked tiles."""
    B, C, H, W, KH, KW = 5, 3, 5, 4, 3, 2
    how = kernel_solve.plan((B, C, H, W), (KH, KW), 8, shared_limit=227 * 1024, max_threads=64, max_tile=max_tile,
                            slots=slots)
    assert how.slots == slots and how.linked == (max_tile is not None)
    for orientation, transpose in (("TR", False), ("BL", True)):
        w = make_weight(rng, C, KH, KW, orientation)
        y = rng.standard_normal((B, C, H, W))
        dense = Dense(w, H, W, orientation)
        x = kernel_solve.solve(device(), y, w, parse_orientation(orientation), transpose, max_tile=max_tile,
                               slots=slots)
        assert_close(x, _transposed_solve(dense, y) if transpose else dense.solve(y), np.float64)


@pytest.mark.parametrize("outputs", kernel_solve.OUTPUTS_PER_THREAD)
def test_every_outputs_per_thread_variant(rng, outputs):
    """Each G, with one output group and a padded one (5 channels), and several groups (17)."""
    for channels, path in ((5, "single"), (17, "tiled")):
        how = _check_paths(rng, (2, channels, 4, 5, 2, 3), "BR", np.float64, path, outputs_per_thread=outputs)
        assert how.outputs_per_thread == outputs


@pytest.mark.parametrize("lanes", [1, 2, 4, 8, 16, 32])
def test_every_lane_split(rng, lanes):
    """L lanes per (pixel, output group), each taking every L-th input, summed by warp shuffles;
    32 lanes is a whole warp (its teams span two warps here: 2 groups x 32 lanes)."""
    B, C, H, W, KH, KW = 2, 3, 5, 4, 3, 3
    how = kernel_solve.plan((B, C, H, W), (KH, KW), 8, shared_limit=227 * 1024, max_threads=64,
                            outputs_per_thread=2, lanes=lanes)
    assert how.lanes == lanes and how.team == 2 * lanes
    for transpose in (False, True):
        w = make_weight(rng, C, KH, KW, "TR")
        y = rng.standard_normal((B, C, H, W))
        dense = Dense(w, H, W, "TR")
        x = kernel_solve.solve(device(), y, w, parse_orientation("TR"), transpose, outputs_per_thread=2, lanes=lanes)
        assert_close(x, _transposed_solve(dense, y) if transpose else dense.solve(y), np.float64)


def test_64_bit_index_variant(rng):
    w = make_weight(rng, 3, 3, 3, "TR")
    y = rng.standard_normal((2, 3, 6, 5))
    dense = Dense(w, 6, 5, "TR")
    for limit in (227 * 1024, 2500):  # single launch, then tiled
        x = kernel_solve.solve(device(limit, index64=True), y, w, parse_orientation("TR"),
                               max_tile=None if limit > 2500 else SMALL_TILE)
        assert_close(x, dense.solve(y), np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_api_solve_and_solve_vjp_on_emulate(rng, orientation, dtype):
    B, C, H, W, KH, KW = 2, 3, 5, 6, 3, 2
    w = make_weight(rng, C, KH, KW, orientation, dtype)
    y, g = (rng.standard_normal((B, C, H, W)).astype(dtype) for _ in range(2))
    dense = Dense(w, H, W, orientation)
    x = ic.solve(y, w, orientation, backend="emulate")
    assert x.dtype == dtype
    assert_close(x, dense.solve(y), dtype)
    grad_y, grad_w = ic.solve_vjp(g, x, w, orientation, backend="emulate")
    expected_y, expected_w = dense.solve_vjp(g, x)
    assert grad_y.dtype == grad_w.dtype == dtype
    assert_close(grad_y, expected_y, dtype)
    assert_close(grad_w, expected_w, dtype)


def test_zero_anchor_raises_or_gives_non_finite_values_with_check_false(rng):
    w = make_weight(rng, 3, 2, 2, "BL")
    w[1, 1, 0, 1] = 0.0  # BL anchor tap is (0, KW-1)
    y = rng.standard_normal((1, 3, 4, 4))
    with pytest.raises(ValueError, match="channel 1"):
        ic.solve(y, w, "BL", backend="emulate")
    with pytest.raises(ValueError, match="channel 1"):
        ic.solve_vjp(y, y, w, "BL", backend="emulate")
    assert not np.isfinite(ic.solve(y, w, "BL", backend="emulate", check=False)).all()


def test_inputs_untouched_and_strided_inputs(rng):
    w = np.asfortranarray(make_weight(rng, 3, 3, 2, "TR"))
    y = rng.standard_normal((2, 6, 9, 7))[:, ::2, ::-2, 1:6]
    saved = (y.copy(), w.copy())
    x = ic.solve(y, w, "TR", backend="emulate")
    assert_close(x, Dense(w, 5, 5, "TR").solve(y), np.float64)
    np.testing.assert_array_equal(saved[0], y)
    np.testing.assert_array_equal(saved[1], w)


class TestPlan:
    H200 = 227 * 1024

    def test_headline_case_is_one_tile_per_image_with_a_team_per_pixel(self):
        how = kernel_solve.plan((100, 12, 32, 32), (3, 3), 4, shared_limit=self.H200)
        assert how.tiles_h * how.tiles_w == 1 and how.grid == 100 and not how.matrices_in_global
        assert (how.outputs_per_thread, how.lanes, how.team) == (8, 4, 8)   # 2 output groups x 4 lanes
        assert how.threads == 32 * how.team == 256                           # the 32 pixels of the longest diagonal
        assert 48 * 1024 < how.shared_bytes <= self.H200

    def test_large_image_is_one_persistent_launch_over_linked_tiles(self):
        how = kernel_solve.plan((1, 3, 2048, 2048), (3, 3), 4, shared_limit=self.H200)
        assert (how.tile_h, how.tile_w) == (kernel_solve.MAX_TILE,) * 2 and not how.matrices_in_global
        assert how.launches == 2 and how.tiles_h == how.tiles_w == 2048 // kernel_solve.MAX_TILE and how.linked
        # tiles of two tile anti-diagonals run at once (a tile lags its neighbours by about a tile width)
        assert how.grid == 2 * how.tiles_h and 1 < how.grain < 2 * kernel_solve.MAX_TILE - 1
        assert how.threads == how.team * (how.threads - 32) // how.team + 32   # and the communication warp
        assert how.shared_bytes <= self.H200
        # the critical path: H + W - 1 steps and a few per tile hand-off, not 2 (H + W)
        assert 2048 + 2048 - 1 < how.estimate.critical_steps < 1.3 * (2048 + 2048)

    def test_many_channels_put_the_matrices_in_global_memory(self):
        how = kernel_solve.plan((8, 64, 8, 8), (3, 3), 8, shared_limit=self.H200)
        assert how.matrices_in_global and how.shared_bytes <= self.H200
        assert not kernel_solve.plan((8, 64, 8, 8), (3, 3), 4, shared_limit=self.H200).matrices_in_global

    def test_team_is_the_cheapest_by_the_cost_model(self):
        """G and L minimize step_cost for the block's longest step (its images times the tile's longest
        diagonal); a block holds a team for each of its pixels when it can, and the communication warp
        of linked tiles."""
        for B, C, H, itemsize in ((4, 12, 32, 4), (4, 48, 16, 4), (4, 3, 64, 4), (400, 1, 4, 8), (4, 5, 9, 8),
                                  (1, 3, 2048, 4)):
            how = kernel_solve.plan((B, C, H, H), (3, 3), itemsize, shared_limit=self.H200)
            inputs, items, comm = 8 * C, how.slots * min(how.tile_h, how.tile_w), 32 * how.linked
            limit = {G: n - comm for G, n in kernel_solve.MAX_THREADS_FOR_OUTPUTS.items()}
            costs = [kernel_solve.step_cost(C, inputs, G, L, items, limit[G], itemsize)
                     for G in kernel_solve.OUTPUTS_PER_THREAD for L in kernel_solve.LANES if L <= inputs]
            G = how.outputs_per_thread
            assert kernel_solve.step_cost(C, inputs, G, how.lanes, items, limit[G], itemsize) == min(
                c for c in costs if c is not None)
            assert how.team == -(-C // G) * how.lanes
            assert how.threads % 32 == 0 and how.team + comm <= how.threads <= limit[G] + comm
            assert how.threads - comm >= min(items, limit[G] // how.team) * how.team

    def test_tile_images_per_block_and_grain_have_the_lowest_estimate(self):
        """The plan is the cheapest candidate by the cost model: forcing another tile side, images per block
        or grain never gives a lower estimate."""
        for shape, itemsize in (((100, 12, 32, 32), 4), ((100, 48, 16, 16), 4), ((1, 12, 32, 32), 4),
                                ((1000, 12, 8, 8), 4), ((2, 3, 256, 256), 8)):
            how = kernel_solve.plan(shape, (3, 3), itemsize, shared_limit=self.H200)
            for options in ({"max_tile": 8}, {"max_tile": 16}, {"slots": 1}, {"slots": 4}, {"grain": 1},
                            {"grain": 4}):
                other = kernel_solve.plan(shape, (3, 3), itemsize, shared_limit=self.H200, **options)
                assert how.estimate.cycles <= other.estimate.cycles, (shape, options)

    def test_fewer_images_than_sms_split_into_tiles_when_the_model_says_so(self):
        """One 32 x 32 image of 12 channels leaves all but one SM idle; the model still prefers it whole,
        since a linked tile pays a fence and L2 round trips per grain. One image of 48 channels at 16 x 16
        splits: its steps are long enough to win from four SMs. Many small images share blocks."""
        assert kernel_solve.plan((1, 12, 32, 32), (3, 3), 4, shared_limit=self.H200).tiles_h == 1
        split = kernel_solve.plan((1, 48, 16, 16), (3, 3), 4, shared_limit=self.H200)
        assert split.linked and split.tiles_h * split.tiles_w > 1
        assert kernel_solve.plan((1000, 12, 8, 8), (3, 3), 4, shared_limit=self.H200).slots > 1

    def test_cost_model_prefers_lanes_for_short_diagonals_and_sharing_for_long_ones(self):
        cost = kernel_solve.step_cost
        # one pixel: splitting its 96 inputs over 8 lanes beats one lane doing all
        assert cost(12, 96, 4, 8, 1, 1024, 4) < cost(12, 96, 4, 1, 1, 1024, 4)
        # more outputs per thread share each x load: fewer instructions when the block is full
        assert cost(12, 96, 8, 4, 32, 1024, 4) < cost(12, 96, 1, 4, 32, 1024, 4)
        assert cost(1024, 96, 1, 2, 32, 1024, 4) is None   # a team of 2048 threads does not fit

    def test_matrix_rows_and_tile_channels_have_conflict_free_strides(self):
        for C in range(1, 40):
            how = kernel_solve.plan((1, C, 9, 9), (3, 3), 4, shared_limit=self.H200)
            G = how.outputs_per_thread
            unit = min(G, 4)
            assert how.mat_stride % unit == 0 and (how.mat_stride // unit) % 2 == 1
            assert how.mat_stride >= -(-C // G) * G
            assert how.channel_stride % 2 == 1

    @pytest.mark.parametrize("itemsize", [4, 8])
    def test_many_channels_run_until_one_pixel_does_not_fit(self, itemsize):
        """A^-1 by solve_invert, the step matrices and offsets in global memory, 1 x 1 linked tiles: the most
        channels are those whose one pixel with its 3 x 3 halo fits in shared memory (6456 in float32, 3228
        in float64 on an H100/H200, as v1); one more raises, naming backend='numpy'."""
        most = (self.H200 - 4) // (9 * itemsize)
        how = kernel_solve.plan((1, most, 8, 8), (3, 3), itemsize, shared_limit=self.H200)
        assert how.inverse_in_global and how.matrices_in_global and how.launches == 3
        assert (how.tile_h, how.tile_w, how.channel_stride) == (1, 1, 9) and how.linked
        assert how.shared_bytes == most * 9 * itemsize + 4 <= self.H200
        with pytest.raises(ValueError, match=r"even for one pixel.*backend='numpy'"):
            kernel_solve.plan((1, most + 1, 8, 8), (3, 3), itemsize, shared_limit=self.H200)

    def test_inverse_in_global_when_a_warp_per_column_is_cheaper(self):
        assert not kernel_solve.plan((1, 12, 8, 8), (3, 3), 4, shared_limit=self.H200).inverse_in_global
        assert kernel_solve.plan((1, 160, 8, 8), (3, 3), 4, shared_limit=self.H200).inverse_in_global

    def test_impossible_sizes_raise(self):
        with pytest.raises(ValueError, match="shared memory.*backend='numpy'"):
            kernel_solve.plan((1, 4096, 8, 8), (3, 3), 8, shared_limit=48 * 1024)
        with pytest.raises(ValueError, match="outputs_per_thread"):
            kernel_solve.plan((1, 3, 8, 8), (3, 3), 8, shared_limit=self.H200, outputs_per_thread=3)
        with pytest.raises(ValueError, match="lanes"):
            kernel_solve.plan((1, 3, 8, 8), (3, 3), 8, shared_limit=self.H200, lanes=3)


def test_outputs_per_thread_matches_the_kernel_entry_points():
    entries = kernel_source.entry_points("solve")
    assert {f"solve_wavefront_g{G}" for G in kernel_solve.OUTPUTS_PER_THREAD} <= set(entries)


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("inverse_in_global", [False, True])
def test_prepare_writes_every_matrix_once_and_zeroes_the_work_counters(rng, transpose, inverse_in_global):
    """solve_prepare alone, on several blocks (a block per output row, each forming A^-1 itself or reading
    solve_invert's), against NumPy: zmat = F_0^-1, mat rows = M_t = -F_0^-1 F_t (zero past C), the inputs'
    offsets in the staged tile, work zeroed. 37 channels: solve_invert's warps take two rounds of lanes."""
    C, KH, KW, orientation = 37, 2, 3, "BL"
    orient = parse_orientation(orientation)
    w = make_weight(rng, C, KH, KW, orientation)
    how = kernel_solve.plan((1, C, 4, 4), (KH, KW), 8, shared_limit=227 * 1024, max_threads=64,
                            inverse_in_global=inverse_in_global)
    MS, taps, chan, EW = how.mat_stride, KH * KW, how.channel_stride, how.tile_w + KW - 1
    zmat, mat, ainv = np.full(C * C, np.nan), np.full((taps - 1) * C * MS, np.nan), np.full(C * C, np.nan)
    work, offsets = np.full(37, -7, np.int32), np.full((taps - 1) * C, -7, np.int32)
    i32 = np.int32
    if inverse_in_global:
        device().function("solve", "solve_invert", "float64", "int32")(
            (how.invert_grid,), (how.invert_threads,), (w, ainv, i32(C), i32(KH), i32(KW), i32(orient.flip_h),
                                                        i32(orient.flip_w)))
    fn = device().function("solve", "solve_prepare", "float64", "int32")
    fn((how.prepare_grid,), (how.prepare_threads,),
       (w, ainv, zmat, mat, work, i32(work.size), offsets, i32(C), i32(MS), i32(KH), i32(KW), i32(KH), i32(KW),
        i32(orient.flip_h), i32(orient.flip_w), i32(transpose), i32(chan), i32(EW), i32(inverse_in_global)),
       shared_mem=how.prepare_shared_bytes)
    assert how.prepare_grid > 1 and (work == 0).all() and how.inverse_in_global == inverse_in_global
    # frame tap t = p*KW + q is the physical tap (p, KW-1-q) for BL (flip_h, not flip_w)
    taps_f = [w[:, :, p, KW - 1 - q] for p in range(KH) for q in range(KW)]
    if transpose:
        taps_f = [f.T for f in taps_f]
    anchor = np.tril(w[:, :, 0, KW - 1])
    inverse = np.linalg.inv(anchor.T if transpose else anchor)
    np.testing.assert_allclose(zmat.reshape(C, C), inverse, atol=1e-12)
    rows = mat.reshape(taps - 1, C, MS)   # rows[t-1, c, o] = M_t[o, c]
    for t in range(1, taps):
        np.testing.assert_allclose(rows[t - 1, :, :C], (-inverse @ taps_f[t]).T, atol=1e-12)
    assert (rows[:, :, C:] == 0).all()
    expected = [c * chan - (t // KW) * EW - t % KW for t in range(1, taps) for c in range(C)]
    np.testing.assert_array_equal(offsets, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("orientation", ["TL", "BR"])
def test_many_channels_under_small_shared_memory_limits(rng, dtype, orientation):
    """Item 1's path on a device whose limit is too small for A^-1, for the step matrices and for the whole
    image: solve_invert, matrices and offsets read from global memory, small linked tiles; solve and the
    transposed solve against the oracle. Below one pixel with its halo, a ValueError names backend='numpy'."""
    B, C, H, W, KH, KW = 2, 40, 4, 3, 2, 3
    itemsize = np.dtype(dtype).itemsize
    limit = C * (3 * 4 | 1) * itemsize + 4   # a 2 x 2 tile with its halo (and the claim): not A^-1, not the image
    how = kernel_solve.plan((B, C, H, W), (KH, KW), itemsize, shared_limit=limit, max_threads=64)
    assert how.inverse_in_global and how.matrices_in_global and how.linked and how.launches == 3
    assert how.tile_h * how.tile_w <= 4 and C * (C | 1) * itemsize > limit
    for transpose in (False, True):
        w = make_weight(rng, C, KH, KW, orientation, dtype)
        y = rng.standard_normal((B, C, H, W)).astype(dtype)
        T = dense_matrix(w, H, W, orientation)
        expected = np.linalg.solve(T.T if transpose else T, y.reshape(B, -1).astype(np.float64).T).T
        x = kernel_solve.solve(device(limit), y, w, parse_orientation(orientation), transpose)
        assert_close(x, expected.reshape(y.shape), dtype)
    pixel = C * (KH * KW | 1) * itemsize + 4   # one pixel of the channels with its halo, and the claim
    with pytest.raises(ValueError, match=r"even for one pixel.*backend='numpy'"):
        kernel_solve.solve(device(pixel - 1), y, w, parse_orientation(orientation))


def test_api_names_the_numpy_backend_when_channels_do_not_fit(rng, monkeypatch):
    from invconv_cupy.backends import emulate_backend

    monkeypatch.setattr(emulate_backend.device, "max_shared_memory_per_block_optin", 512)
    w = make_weight(rng, 8, 3, 3, "TL")
    y = rng.standard_normal((1, 8, 4, 4))
    with pytest.raises(ValueError, match="backend='numpy'"):
        ic.solve(y, w, backend="emulate")


def test_no_solve_entry_point_spills_on_sm_80_either():
    """test_kernel_resources checks every entry point on sm_90; the sm_80 int32 builds are the ones where
    solve variants spilled (float64 before each G got its launch bounds, float32 G = 4 at 768 threads)."""
    pytest.importorskip("cupy")
    from invconv_cupy import kernel_resources

    resources, failures = kernel_resources.collect((80,), ("float32", "float64"), ("int32",))
    assert failures == ()
    solve = [r for r in resources if r.family == "solve"]
    assert {(r.entry, r.dtype) for r in solve} == {(e, d) for e in kernel_source.entry_points("solve")
                                                   for d in ("float32", "float64")}
    assert kernel_resources.offenders(solve) == []
