"""PSFs: scikit-image convention <-> causal weights, quadrant detection, the stability test, generators."""

import numpy as np
import pytest
from scipy.signal import convolve2d

import invconv_cupy as ic
from cli_util import stable_quadrant_psf
from invconv_cupy.cli import psf as P
from invconv_cupy.cli.errors import CliError
from invconv_cupy.cli.methods import BlurOperator
from invconv_cupy.cli.device import resolve_device

ORIENTATIONS = ("TL", "TR", "BL", "BR")


def _conv(image, kernel):
    return ic.conv(image[None, None], kernel.as_weight(), kernel.orientation)[0, 0]


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("kh, kw", [(3, 3), (2, 5), (4, 1), (1, 3), (1, 1)])
def test_quadrant_psf_is_the_causal_conv(rng, orientation, kh, kw):
    psf = np.zeros((2 * kh - 1, 2 * kw - 1))
    quadrant = psf[P.quadrant_slices(psf.shape, orientation)]
    quadrant[...] = rng.standard_normal(quadrant.shape)
    image = rng.standard_normal((rng.integers(5, 12), rng.integers(5, 12)))
    kernel = P.causal_kernel(psf, orientation)
    assert kernel.orientation == orientation
    np.testing.assert_allclose(_conv(image, kernel), convolve2d(image, psf, mode="same"), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(P.psf_of(kernel), P.crop_to_support(psf))


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_transposed_kernel_is_conv_vjp(rng, orientation):
    kernel = P.causal_kernel(stable_quadrant_psf(rng, orientation), orientation)
    x, g = rng.standard_normal((2, 1, 1, 9, 11))
    grad_x, _ = ic.conv_vjp(g, x, kernel.as_weight(), orientation)
    t = kernel.transposed()
    np.testing.assert_allclose(ic.conv(g, t.as_weight(), t.orientation), grad_x, rtol=0, atol=1e-12)


def test_any_psf_splits_into_causal_parts(rng):
    psf = rng.standard_normal((2 * rng.integers(1, 4) + 1, 2 * rng.integers(1, 4) + 1))
    image = rng.standard_normal((10, 13))
    parts = P.split_psf(psf)
    assert sorted(p.orientation for p in parts) == sorted(ORIENTATIONS)
    total = sum(_conv(image, k) for k in parts)
    np.testing.assert_allclose(total, convolve2d(image, psf, mode="same"), rtol=0, atol=1e-12)
    blur = BlurOperator(psf, resolve_device("cpu"))
    x, y = rng.standard_normal((2, 2, 1, 10, 13))
    np.testing.assert_allclose(np.vdot(blur.forward(x), y), np.vdot(x, blur.adjoint(y)), rtol=1e-12)


def test_quadrants_of_lines_and_points():
    dot = np.array([[1.0]])
    assert P.quadrants_of(dot) == list(ORIENTATIONS)
    right = np.array([[0.0, 0.0, 0.5, 0.3, 0.2]])
    assert P.quadrants_of(right) == ["TL", "BL"]
    assert P.quadrants_of(np.ones((3, 3))) == []


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_stable_psf_matches_its_quadrant(rng, orientation):
    psf = stable_quadrant_psf(rng, orientation)
    kernel = P.exact_kernel(psf)
    assert kernel.orientation == orientation


def test_refusals_name_the_reason():
    with pytest.raises(P.NotSafeForExact, match="not inside one quadrant.*--method tikhonov"):
        P.exact_kernel(P.gaussian_psf(1.0))
    with pytest.raises(P.NotSafeForExact, match="not inside the TR quadrant"):
        P.exact_kernel(P.motion_psf(3, 0, 0.5), "TR")
    zero_centre = np.zeros((3, 3))
    zero_centre[2, 2] = 1.0
    with pytest.raises(P.NotSafeForExact, match="centre entry is zero"):
        P.exact_kernel(zero_centre)


@pytest.mark.parametrize("angle, quadrant", [(0, "TL"), (30, "BL"), (120, "BR"), (200, "TR"), (300, "TL")])
def test_motion_psf(angle, quadrant):
    psf = P.motion_psf(7, angle, 0.8)
    assert psf.shape[0] % 2 == 1 and psf.shape[1] % 2 == 1
    assert psf.sum() == pytest.approx(1.0)
    assert psf[psf.shape[0] // 2, psf.shape[1] // 2] > 0
    assert quadrant in P.quadrants_of(psf)
    np.testing.assert_array_equal(P.motion_psf(1, angle), [[1.0]])


def test_gaussian_psf():
    psf = P.gaussian_psf(1.3)
    assert psf.shape == (9, 9)
    assert psf.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(psf, psf[::-1, ::-1])


@pytest.mark.parametrize(
    "bad, words",
    [
        (np.ones((2, 3)), "odd height and width"),
        (np.ones((3, 3, 3)), "2-D"),
        (np.array([[1.0, np.nan, 0.0]]), "NaN or Inf"),
        (np.zeros((3, 3)), "sums to zero"),
        (np.array([["a"]]), "real numbers"),
    ],
)
def test_validate_psf_rejects(bad, words):
    with pytest.raises(CliError, match=words):
        P.validate_psf(bad, "x")


@pytest.mark.parametrize(
    "call", [lambda: P.motion_psf(0.5, 0), lambda: P.motion_psf(3, 0, 1.5), lambda: P.gaussian_psf(0.0)]
)
def test_generator_arguments_checked(call):
    with pytest.raises(CliError):
        call()
