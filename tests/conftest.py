import os

import numpy as np
import pytest

from oracle import anchor

ORIENTATIONS = ("TL", "TR", "BL", "BR")
DTYPES = (np.float32, np.float64)
# (B, C, H, W, KH, KW): odd shapes on purpose
ODD_SHAPES = [
    (2, 3, 4, 5, 3, 3),
    (1, 1, 1, 1, 1, 1),
    (2, 2, 1, 1, 3, 2),  # kernel larger than the image
    (1, 3, 2, 6, 4, 5),  # kernel taller than the image
    (3, 1, 5, 3, 2, 1),  # C=1, rectangular kernel
    (1, 4, 3, 3, 1, 2),
    (2, 2, 6, 2, 2, 3),
]
# rtol per dtype for comparisons against the float64 oracle
RTOL = {np.dtype(np.float32): 2e-4, np.dtype(np.float64): 1e-10}


@pytest.fixture
def rng(request):
    """Fresh random inputs every run; the seed is printed so a failure can be replayed."""
    seed = int(os.environ.get("INVCONV_TEST_SEED", int.from_bytes(os.urandom(4), "little")))
    print(f"{request.node.nodeid}: seed={seed}")
    return np.random.default_rng(seed)


def make_weight(rng, channels, kh, kw, orientation="TL", dtype=np.float64):
    """A random weight whose inverse stays well conditioned.

    The anchor diagonal is sign * U(1, 2); the other taps are small. The anchor's
    masked upper triangle is filled with large junk that every function must ignore.
    """
    w = rng.uniform(-1, 1, (channels, channels, kh, kw)) * (0.5 / (channels * kh * kw))
    a, e = anchor(orientation, kh, kw)
    diag = rng.choice([-1.0, 1.0], channels) * rng.uniform(1.0, 2.0, channels)
    w[:, :, a, e] = np.tril(w[:, :, a, e], -1) + np.diag(diag) + np.triu(rng.uniform(5, 9, (channels, channels)), 1)
    return w.astype(dtype)


def assert_close(actual, expected, dtype, scale=None):
    """Compare with a tolerance relative to the size of ``expected`` (or ``scale``)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    ref = scale if scale is not None else max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=RTOL[np.dtype(dtype)] * ref)


def cuda_available() -> bool:
    """A CUDA device CuPy can use. Any failure to import or initialize CuPy means no (``import cupy``
    raises OSError, not ImportError, when it cannot create ``~/.cupy``)."""
    try:
        import cupy

        return bool(cupy.cuda.is_available())
    except Exception:  # noqa: BLE001 - every way CuPy fails means "no GPU"
        return False


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``gpu`` when there is no CUDA device. (The marker, not ``item.keywords``:
    keywords also hold the names of parent folders, and a checkout may live in one named ``gpu``.)"""
    marked = [item for item in items if item.get_closest_marker("gpu") is not None]
    if marked and not cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA device (cupy.cuda.is_available() is False)")
        for item in marked:
            item.add_marker(skip)
