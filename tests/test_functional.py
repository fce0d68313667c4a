"""The functional API against the dense oracle, the SPEC identities, finite differences."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import invconv_cupy as ic
from conftest import DTYPES, ODD_SHAPES, ORIENTATIONS, assert_close, make_weight
from oracle import Dense



def _case(rng, shape, orientation, dtype):
    B, C, H, W, KH, KW = shape
    w = make_weight(rng, C, KH, KW, orientation, dtype)
    x = rng.standard_normal((B, C, H, W)).astype(dtype)
    return x, w, Dense(w, H, W, orientation)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("shape", ODD_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_every_function_matches_dense_oracle(rng, shape, orientation, dtype):
    x, w, dense = _case(rng, shape, orientation, dtype)
    g = rng.standard_normal(x.shape).astype(dtype)

    y = ic.conv(x, w, orientation)
    assert y.dtype == dtype and y.shape == x.shape and y.flags.c_contiguous
    assert_close(y, dense.conv(x), dtype)

    assert_close(ic.solve(x, w, orientation), dense.solve(x), dtype)

    gx, gw = ic.conv_vjp(g, x, w, orientation)
    ex, ew = dense.conv_vjp(g, x)
    assert gx.dtype == gw.dtype == dtype
    assert_close(gx, ex, dtype)
    assert_close(gw, ew, dtype)

    gy, gw = ic.solve_vjp(g, x, w, orientation)
    ey, ew = dense.solve_vjp(g, x)
    assert_close(gy, ey, dtype)
    assert_close(gw, ew, dtype)
    assert_close(ic.solve(g, w, orientation, transpose=True), ey, dtype)  # T^-T g

    H, W = x.shape[2:]
    value = ic.logdet(w, H, W, orientation)
    assert isinstance(value, float)
    assert value == pytest.approx(dense.logdet(), rel=1e-5 if dtype == np.float32 else 1e-12, abs=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 3), C=st.integers(1, 4), H=st.integers(1, 9), W=st.integers(1, 9),
    KH=st.integers(1, 4), KW=st.integers(1, 4), orientation=st.sampled_from(ORIENTATIONS),
    seed=st.integers(0, 2**32 - 1),
)
def test_identities(B, C, H, W, KH, KW, orientation, seed):
    """solve(conv(x)) == x, conv(solve(y)) == y, and both adjoint identities."""
    rng = np.random.default_rng(seed)
    w = make_weight(rng, C, KH, KW, orientation)
    x, b = rng.standard_normal((2, B, C, H, W))
    y = ic.conv(x, w, orientation)
    scale = max(1.0, np.abs(x).max())
    assert_close(ic.solve(y, w, orientation), x, np.float64, scale)
    assert_close(ic.conv(ic.solve(b, w, orientation), w, orientation), b, np.float64, scale)
    # <conv(x), b> == <x, T^T b>  and  <solve(y), b> == <y, T^-T b>
    grad_x, _ = ic.conv_vjp(b, x, w, orientation)
    assert np.vdot(y, b) == pytest.approx(np.vdot(x, grad_x), rel=1e-9, abs=1e-9)
    grad_y, _ = ic.solve_vjp(b, x, w, orientation)
    assert np.vdot(x, b) == pytest.approx(np.vdot(y, grad_y), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_vjps_match_finite_differences(rng, orientation):
    B, C, H, W, KH, KW = 2, 3, 5, 4, 3, 2
    w = make_weight(rng, C, KH, KW, orientation)
    x, y, g, dx = rng.standard_normal((4, B, C, H, W))
    dw = rng.standard_normal(w.shape)
    eps = 1e-6

    def directional(f, *args):
        return (f(*[a + eps * d for a, d in args]) - f(*[a - eps * d for a, d in args])) / (2 * eps)

    # conv: d<g, conv(x, w)> along (dx, dw)
    fd = directional(lambda xx, ww: np.vdot(g, ic.conv(xx, ww, orientation)), (x, dx), (w, dw))
    gx, gw = ic.conv_vjp(g, x, w, orientation)
    assert fd == pytest.approx(np.vdot(gx, dx) + np.vdot(gw, dw), rel=1e-6)

    # solve: d<g, solve(y, w)> along (dx as dy, dw), vjp evaluated at the solve's output
    fd = directional(lambda yy, ww: np.vdot(g, ic.solve(yy, ww, orientation)), (y, dx), (w, dw))
    gy, gw = ic.solve_vjp(g, ic.solve(y, w, orientation), w, orientation)
    assert fd == pytest.approx(np.vdot(gy, dx) + np.vdot(gw, dw), rel=1e-6)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_masked_anchor_entries_change_nothing(rng, orientation):
    B, C, H, W, KH, KW = 2, 4, 4, 3, 2, 3
    w = make_weight(rng, C, KH, KW, orientation)
    a, e = {"TL": (KH - 1, KW - 1), "TR": (KH - 1, 0), "BL": (0, KW - 1), "BR": (0, 0)}[orientation]
    other = w.copy()
    other[:, :, a, e] += np.triu(rng.standard_normal((C, C)), 1)
    x, g = rng.standard_normal((2, B, C, H, W))
    for f in (
        lambda ww: (ic.conv(x, ww, orientation),),
        lambda ww: (ic.solve(x, ww, orientation),),
        lambda ww: ic.conv_vjp(g, x, ww, orientation),
        lambda ww: ic.solve_vjp(g, x, ww, orientation),
    ):
        for r1, r2 in zip(f(w), f(other)):
            np.testing.assert_array_equal(r1, r2)
    for _, gw in (ic.conv_vjp(g, x, w, orientation), ic.solve_vjp(g, x, w, orientation)):
        assert np.all(np.triu(gw[:, :, a, e], 1) == 0)
        assert np.any(np.tril(gw[:, :, a, e]) != 0)


def test_inputs_never_modified_and_strided_inputs_are_correct(rng):
    w = make_weight(rng, 3, 3, 2, "BR")
    x = rng.standard_normal((2, 6, 8, 7))[:, ::2, ::-2, 1:6]  # a strided, reversed view
    assert not x.flags.c_contiguous
    g = np.asfortranarray(rng.standard_normal(x.shape))
    w_strided = np.asfortranarray(w)
    saved = [a.copy() for a in (x, g, w_strided)]
    dense = Dense(w, 4, 5, "BR")
    assert_close(ic.conv(x, w_strided, "BR"), dense.conv(x), np.float64)
    assert_close(ic.solve(x, w_strided, "BR"), dense.solve(x), np.float64)
    for got, want in zip(ic.conv_vjp(g, x, w_strided, "BR"), dense.conv_vjp(g, x)):
        assert_close(got, want, np.float64)
    for got, want in zip(ic.solve_vjp(g, x, w_strided, "BR"), dense.solve_vjp(g, x)):
        assert_close(got, want, np.float64)
    ic.logdet(w_strided, 4, 5, "BR")
    for before, after in zip(saved, (x, g, w_strided)):
        np.testing.assert_array_equal(before, after)


def test_empty_batch(rng):
    w = make_weight(rng, 2, 2, 2)
    x = np.zeros((0, 2, 3, 3))
    assert ic.solve(x, w).shape == x.shape
    gx, gw = ic.solve_vjp(x, x, w)
    assert gx.shape == x.shape and gw.shape == w.shape and not gw.any()


@pytest.mark.parametrize("fft_min_taps", [1, 10**9], ids=["fft", "direct"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_both_numpy_convolution_paths_match_dense_oracle(rng, monkeypatch, fft_min_taps, orientation, dtype):
    from invconv_cupy.backends import numpy_backend

    monkeypatch.setattr(numpy_backend, "FFT_MIN_TAPS", fft_min_taps)
    for shape in [(2, 3, 4, 5, 3, 3), (1, 2, 2, 6, 4, 5), (2, 1, 7, 3, 2, 1)]:
        x, w, dense = _case(rng, shape, orientation, dtype)
        g = rng.standard_normal(x.shape).astype(dtype)
        assert_close(ic.conv(x, w, orientation), dense.conv(x), dtype)
        gx, _ = ic.conv_vjp(g, x, w, orientation)
        assert_close(gx, dense.conv_vjp(g, x)[0], dtype)
