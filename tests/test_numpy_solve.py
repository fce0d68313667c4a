"""The NumPy solve's machinery (invconv_cupy.backends.numpy_wavefront): every way of loading the
image, the plans kept per thread and what they must never do (alias a result, leak between
shapes or threads, outgrow their budget), against the dense float64 oracle."""

import threading

import numpy as np
import pytest

import invconv_cupy as ic
from conftest import DTYPES, ODD_SHAPES, ORIENTATIONS, assert_close, make_weight
from invconv_cupy.backends import numpy_wavefront
from oracle import Dense

# every order _staging_order can pick: a direct copy, or through (C, B, H, W) or (C, H, B, W)
STAGINGS = {"direct": None, "CBHW": (1, 0, 2, 3), "CHBW": (1, 2, 0, 3)}


@pytest.fixture(autouse=True)
def fresh_plans():
    """Each test starts and ends with no kept plans (so a test cannot pass on another's)."""
    numpy_wavefront._cache.plans.clear()
    yield
    numpy_wavefront._cache.plans.clear()


def _case(rng, shape, orientation, dtype):
    B, C, H, W, KH, KW = shape
    w = make_weight(rng, C, KH, KW, orientation, dtype)
    return rng.standard_normal((B, C, H, W)).astype(dtype), w, Dense(w, H, W, orientation)


@pytest.mark.parametrize("staging", STAGINGS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_every_load_order_solves_both_systems(rng, monkeypatch, staging, orientation, dtype):
    monkeypatch.setattr(numpy_wavefront, "_staging_order", lambda shape, itemsize: STAGINGS[staging])
    for shape in ODD_SHAPES[:5]:
        y, w, dense = _case(rng, shape, orientation, dtype)
        expected_x, expected_t = dense.solve(y), dense.solve_vjp(y, y)[0]  # T^-1 y and T^-T y
        assert_close(ic.solve(y, w, orientation), expected_x, dtype)
        assert_close(ic.solve(y, w, orientation, transpose=True), expected_t, dtype)
        strided = np.asfortranarray(y)[:, :, ::-1][:, :, ::-1]  # same values, other strides
        assert_close(ic.solve(strided, w, orientation), expected_x, dtype)


@pytest.mark.parametrize("chained", [1, 99], ids=["one reduction", "additions"])
def test_both_ways_of_summing_a_steps_terms(rng, monkeypatch, chained):
    monkeypatch.setattr(numpy_wavefront, "CHAINED_SUMS", chained)
    for shape in [(2, 2, 6, 5, 5, 4), (1, 3, 4, 4, 2, 3), (2, 1, 3, 7, 3, 1)]:
        for orientation in ORIENTATIONS:
            y, w, dense = _case(rng, shape, orientation, np.float64)
            assert_close(ic.solve(y, w, orientation), dense.solve(y), np.float64)
            assert_close(ic.solve(y, w, orientation, transpose=True), dense.solve_vjp(y, y)[0], np.float64)


@pytest.mark.parametrize("shape", [(64, 16, 8, 8), (100, 12, 32, 32), (8, 3, 256, 256), (1, 3, 512, 512)])
def test_staging_order_is_a_permutation_or_none(shape):
    for itemsize in (4, 8):
        order = numpy_wavefront._staging_order(shape, itemsize)
        assert order is None or sorted(order) == [0, 1, 2, 3]


def test_results_are_never_views_of_the_kept_store(rng):
    """A kept plan is reused by the next solve of its shape: an earlier result must not change.
    (One image of one channel is the case where a contiguous view of the store could slip out.)"""
    for shape in [(3, 1, 1, 1, 1, 1), (2, 3, 4, 5, 3, 3)]:
        y, w, dense = _case(rng, shape, "BR", np.float64)
        first = ic.solve(y, w, "BR")
        kept = first.copy()
        for transpose in (False, True):
            second = ic.solve(rng.standard_normal(y.shape), w, "BR", transpose=transpose)
            assert not np.shares_memory(first, second)
        np.testing.assert_array_equal(first, kept)
        assert_close(first, dense.solve(y), np.float64)
        assert first.flags.c_contiguous and min(first.strides) > 0


def test_plans_are_kept_per_shape_within_their_budget(rng, monkeypatch):
    shapes = [(2, 3, 4, 5, 3, 3), (1, 2, 6, 2, 2, 3), (2, 3, 4, 5, 2, 2)]
    cases = [_case(rng, shape, "TL", np.float32) for shape in shapes]
    for y, w, dense in cases + cases:  # the second round reuses the kept plans
        assert_close(ic.solve(y, w), dense.solve(y), np.float32)
    plans = numpy_wavefront._cache.plans
    assert len(plans) == 3
    assert {key[0] for key in plans} == {tuple(shape[:4]) for shape in shapes}
    assert list(plans.values())[-1] is numpy_wavefront.wavefront((2, 3, 4, 5), (2, 2), np.dtype(np.float32))

    # a budget that holds the smallest plan only: the least recently used go first, and a
    # plan over the budget is used once, not kept (it evicts nothing)
    sizes = {key[0]: plan.nbytes for key, plan in plans.items()}
    small, big = min(sizes, key=sizes.get), max(sizes, key=sizes.get)
    monkeypatch.setattr(numpy_wavefront, "CACHE_BYTES", sizes[small])
    plans.clear()
    by_shape = {tuple(shape[:4]): case for shape, case in zip(shapes, cases)}
    for shape in [small, big]:
        y, w, dense = by_shape[shape]
        assert_close(ic.solve(y, w), dense.solve(y), np.float32)
    assert [key[0] for key in plans] == [small]


def test_threads_keep_their_own_plans(rng):
    """Two threads solving the same shape at once must not share a store: each result must be the
    one computed alone (the GIL is released inside NumPy's products, so steps interleave)."""
    B, C, H, W = 8, 4, 24, 24
    w = make_weight(rng, C, 3, 3, "TR")
    ys = rng.standard_normal((6, B, C, H, W))
    alone = [ic.solve(y, w, "TR") for y in ys]
    for y, x in zip(ys, alone):
        assert_close(ic.conv(x, w, "TR"), y, np.float64)
    failures = []
    start = threading.Barrier(2)

    def work(order):
        start.wait()
        for k in order * 10:
            if not np.allclose(ic.solve(ys[k], w, "TR"), alone[k], rtol=1e-12, atol=1e-12):
                failures.append(k)

    threads = [threading.Thread(target=work, args=(order,)) for order in ([0, 1, 2], [3, 4, 5])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


@pytest.mark.parametrize("transpose", [False, True])
def test_tap_blocks_against_their_definition(rng, transpose):
    """blocks[p][o, (PW-1-q)*C + c] = -(A^-1 W_pq)[o, c] (A^-T and swapped channels when transposed);
    the anchor block is A^-1 (A^-T), whatever the masked upper triangle holds."""
    C, KH, KW = 4, 3, 4
    w = make_weight(rng, C, KH, KW, "TL")
    PH, PW = 2, 3  # taps beyond the reach are left out
    blocks = numpy_wavefront.tap_blocks(w, (PH, PW), np.dtype(np.float64), transpose)
    a = np.tril(w[:, :, -1, -1])
    inverse = np.linalg.inv(a.T if transpose else a)
    assert blocks.shape == (PH, C, PW * C)
    for p in range(PH):
        for q in range(PW):
            tap = w[:, :, KH - 1 - p, KW - 1 - q]
            want = inverse if p == q == 0 else -inverse @ (tap.T if transpose else tap)
            np.testing.assert_allclose(blocks[p][:, (PW - 1 - q) * C : (PW - q) * C], want, rtol=1e-12, atol=1e-12)
