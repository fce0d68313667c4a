"""Every bad input raises a clear ValueError/TypeError before any work is done."""

import numpy as np
import pytest

import invconv_cupy as ic
from conftest import make_weight


@pytest.fixture
def ok(rng):
    w = make_weight(rng, 3, 2, 2)
    x = rng.standard_normal((2, 3, 4, 4))
    return x, w


def _all_calls(x, w, **kw):
    """Every public function on (x, w), so each error case is checked everywhere."""
    return {
        "conv": lambda: ic.conv(x, w, **kw),
        "solve": lambda: ic.solve(x, w, **kw),
        "conv_vjp": lambda: ic.conv_vjp(x, x, w, **kw),
        "solve_vjp": lambda: ic.solve_vjp(x, x, w, **kw),
    }


@pytest.mark.parametrize("fn", ["conv", "solve", "conv_vjp", "solve_vjp"])
@pytest.mark.parametrize(
    "make, exc, words",
    [
        (lambda x, w: (x[0], w), ValueError, "x|y|grad_x|grad_y.*4 dimensions"),
        (lambda x, w: (x[:, :, :, :, None], w), ValueError, "4 dimensions"),
        (lambda x, w: (x, w[:2]), ValueError, "weight must have shape \\(C, C, KH, KW\\) with C = 3"),
        (lambda x, w: (x, w[:, :, :0]), ValueError, "kernel height and width"),
        (lambda x, w: (x, w[0]), ValueError, "weight must have 4 dimensions"),
        (lambda x, w: (x[:, :, :0], w), ValueError, "at least one channel, row and column"),
        (lambda x, w: (x.astype(np.int64), w), TypeError, "float32 or float64, got int64"),
        (lambda x, w: (x.astype(np.float16), w), TypeError, "float32 or float64, got float16"),
        (lambda x, w: (x, w.astype(np.complex128)), TypeError, "weight must be float32 or float64"),
        (lambda x, w: (x.astype(np.float32), w), TypeError, "share one dtype, got float32 and float64"),
        (lambda x, w: (x.tolist(), w), TypeError, "must be an array that supports DLPack"),
        (lambda x, w: (x, "weights"), TypeError, "weight must be an array"),
    ],
)
def test_bad_arrays(ok, fn, make, exc, words):
    x, w = make(*ok)
    with pytest.raises(exc, match=words):
        _all_calls(x, w)[fn]()


@pytest.mark.parametrize("fn", ["conv", "solve", "conv_vjp", "solve_vjp"])
@pytest.mark.parametrize("orientation", ["tl", "XY", "", None, 0])
def test_unknown_orientation(ok, fn, orientation):
    with pytest.raises(ValueError, match="orientation must be one of 'TL', 'TR', 'BL', 'BR'"):
        _all_calls(*ok, orientation=orientation)[fn]()


@pytest.mark.parametrize("fn", ["conv", "solve", "conv_vjp", "solve_vjp"])
def test_unknown_backend(ok, fn):
    with pytest.raises(ValueError, match="backend must be None or one of"):
        _all_calls(*ok, backend="fortran")[fn]()


@pytest.mark.parametrize("fn", ["conv_vjp", "solve_vjp"])
def test_vjp_shape_mismatch(ok, fn):
    x, w = ok
    f = getattr(ic, fn)
    with pytest.raises(ValueError, match="must have the shape of"):
        f(x[:, :, :3], x, w)


@pytest.mark.parametrize("orientation, anchor", [("TL", (1, 2)), ("TR", (1, 0)), ("BL", (0, 2)), ("BR", (0, 0))])
@pytest.mark.parametrize("fn", ["solve", "solve_vjp", "logdet"])
def test_zero_anchor_diagonal_names_the_channel(rng, orientation, anchor, fn):
    w = make_weight(rng, 3, 2, 3, orientation)
    w[1, 1, anchor[0], anchor[1]] = 0.0
    x = rng.standard_normal((1, 3, 3, 3))
    call = {
        "solve": lambda: ic.solve(x, w, orientation),
        "solve_vjp": lambda: ic.solve_vjp(x, x, w, orientation),
        "logdet": lambda: ic.logdet(w, 3, 3, orientation),
    }[fn]
    with pytest.raises(ValueError, match="anchor diagonal is zero at channel 1"):
        call()
    # conv needs no inverse: it still works
    ic.conv(x, w, orientation)


def test_check_false_skips_the_anchor_check(rng):
    w = make_weight(rng, 2, 1, 1)
    w[0, 0, 0, 0] = 0.0
    with np.errstate(all="ignore"):
        x = ic.solve(np.ones((1, 2, 2, 2)), w, check=False)
    assert not np.all(np.isfinite(x))


@pytest.mark.parametrize(
    "height, width, exc, words",
    [(0, 3, ValueError, "height must be at least 1"), (3, -1, ValueError, "width must be at least 1"),
     (2.5, 3, TypeError, "height must be an integer"), (True, 3, TypeError, "height must be an integer"),
     (3, None, TypeError, "width must be an integer")],
)
def test_logdet_bad_extent(rng, height, width, exc, words):
    with pytest.raises(exc, match=words):
        ic.logdet(make_weight(rng, 2, 2, 2), height, width)


def test_logdet_bad_weight(rng):
    with pytest.raises(ValueError, match="weight must have shape"):
        ic.logdet(rng.standard_normal((2, 3, 2, 2)), 3, 3)
    with pytest.raises(TypeError, match="float32 or float64"):
        ic.logdet(np.ones((2, 2, 1, 1), dtype=np.int32), 3, 3)


class _FakeCudaArray:
    """Claims to live on a CUDA device (DLPack device type 2)."""

    def __dlpack__(self, stream=None):  # pragma: no cover - never reached
        raise AssertionError("must not be imported")

    def __dlpack_device__(self):
        return (2, 0)


def test_cpu_backend_refuses_cuda_data_and_mixed_devices(ok):
    x, w = ok
    with pytest.raises(ValueError, match="backend 'numpy' runs on cpu arrays but the data is on cuda:0"):
        ic.conv(_FakeCudaArray(), _FakeCudaArray(), backend="numpy")
    with pytest.raises(ValueError, match="x and weight must be on the same device, got cpu and cuda:0"):
        ic.conv(x, _FakeCudaArray())


@pytest.mark.parametrize(
    "fn, masked, name",
    [("conv", "x", "x"), ("solve", "x", "y"), ("conv_vjp", "x", "grad_y"), ("solve_vjp", "x", "grad_x"),
     ("conv", "weight", "weight"), ("solve_vjp", "weight", "weight"), ("logdet", "weight", "weight")],
)
def test_masked_arrays_are_refused(ok, rng, fn, masked, name):
    """A masked array's mask would be silently ignored: refuse it, naming the argument."""
    x, w = ok
    if masked == "x":
        x = np.ma.masked_array(x, mask=rng.random(x.shape) < 0.5)
    else:
        w = np.ma.masked_array(w, mask=rng.random(w.shape) < 0.5)
    call = (lambda: ic.logdet(w, 4, 4)) if fn == "logdet" else _all_calls(x, w)[fn]
    with pytest.raises(TypeError, match=f"^{name} is a NumPy masked array.*filled"):
        call()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("orientation", ["TL", "BR"])
@pytest.mark.parametrize("fn", ["solve", "solve_vjp", "logdet"])
@pytest.mark.parametrize("backend", ["numpy", "emulate"])
def test_non_finite_anchor_diagonal_names_the_channel(rng, bad, orientation, fn, backend):
    channel = int(rng.integers(0, 3))
    w = make_weight(rng, 3, 2, 2, orientation)
    a = 1 if orientation == "TL" else 0
    w[channel, channel, a, a] = bad
    x = rng.standard_normal((1, 3, 3, 3))
    call = {
        "solve": lambda: ic.solve(x, w, orientation, backend=backend),
        "solve_vjp": lambda: ic.solve_vjp(x, x, w, orientation, backend=backend),
        "logdet": lambda: ic.logdet(w, 3, 3, orientation, backend=backend),
    }[fn]
    with pytest.raises(ValueError, match=f"anchor diagonal is {bad} at channel {channel} "):
        call()


@pytest.mark.parametrize("dtype, tiny", [(np.float64, 1e-310), (np.float32, 1e-40)])
@pytest.mark.parametrize("backend", ["numpy", "emulate"])
def test_subnormal_anchor_diagonal_behaves_as_documented(rng, dtype, tiny, backend):
    """README: a subnormal anchor entry passes check=True; its reciprocal overflows, so solve's
    result is not finite, while logdet stays finite."""
    w = make_weight(rng, 2, 2, 2).astype(dtype)
    w[1, 1, 1, 1] = tiny
    assert 0 < abs(w[1, 1, 1, 1]) < np.finfo(dtype).tiny
    x = rng.standard_normal((1, 2, 3, 3)).astype(dtype)
    with np.errstate(all="ignore"):
        result = ic.solve(x, w, backend=backend)
    assert not np.isfinite(result).all()
    assert np.isfinite(ic.logdet(w, 3, 3))
