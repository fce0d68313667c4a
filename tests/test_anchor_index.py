"""invconv_cupy.anchor_index: where the anchor tap sits, for every orientation."""

import numpy as np
import pytest

import invconv_cupy as ic
from oracle import Dense, anchor

ORIENTATIONS = ("TL", "TR", "BL", "BR")


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("size", [1, 2, 3, (1, 4), (5, 2), (np.int64(3), 2)])
def test_matches_the_oracle(orientation, size):
    kh, kw = (size, size) if np.ndim(size) == 0 else size
    assert ic.anchor_index(orientation, size) == anchor(orientation, int(kh), int(kw))
    assert all(type(i) is int for i in ic.anchor_index(orientation, size))


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_identity_at_the_anchor_gives_a_well_conditioned_round_trip_in_float32(rng, orientation):
    # A user who put the identity at the TL position for TR got a round-trip error of 1e19 in float32.
    c, k = 3, 3
    weight = (0.05 * rng.standard_normal((c, c, k, k))).astype(np.float32)
    weight[(slice(None), slice(None)) + ic.anchor_index(orientation, k)] += np.eye(c, dtype=np.float32)
    x = rng.standard_normal((2, c, 20, 24)).astype(np.float32)
    back = ic.solve(ic.conv(x, weight, orientation), weight, orientation)
    assert np.abs(back - x).max() < 1e-4
    # ... and that tap's diagonal is the triangular matrix's: log|det T| = H * W * sum_o log|A[o, o]|.
    a, e = ic.anchor_index(orientation, k)
    diagonal = np.diag(weight[:, :, a, e]).astype(np.float64)
    expected = 3 * 4 * np.sum(np.log(np.abs(diagonal)))
    assert Dense(weight, 3, 4, orientation).logdet() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "orientation, size, error, words",
    [
        ("XY", 3, ValueError, "orientation must be one of"),
        ("TL", 0, ValueError, "kernel_size must be at least 1"),
        ("TL", (3, 0), ValueError, "kernel_size must be at least 1"),
        ("TL", 2.5, TypeError, "kernel_size must be an int or a pair of ints"),
        ("TL", (3, 3, 3), TypeError, "kernel_size must be an int or a pair of ints"),
        ("TL", True, TypeError, "kernel_size must be an int or a pair of ints"),
        ("TL", "3", TypeError, "kernel_size must be an int or a pair of ints"),
    ],
)
def test_bad_arguments_are_named(orientation, size, error, words):
    with pytest.raises(error, match=words):
        ic.anchor_index(orientation, size)


def test_exported():
    assert "anchor_index" in ic.__all__ and ic.anchor_index.__doc__
