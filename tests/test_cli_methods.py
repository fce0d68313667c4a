"""Deblurring methods: noise estimates, lambda choice, preconditioners and CG."""

import numpy as np
import pytest
from scipy.signal import convolve2d

from cli_util import stable_quadrant_psf, synthetic_image
from invconv_cupy.cli.device import resolve_device
from invconv_cupy.cli.methods import choose_lambda, deblur_exact, deblur_tikhonov
from invconv_cupy.cli.noise import estimate_noise, haar_noise, quantization_noise, spectral_noise
from invconv_cupy.cli.psf import exact_kernel, gaussian_psf, motion_psf

CPU = resolve_device("cpu")


def test_noise_estimates_on_white_noise(rng):
    sigma = rng.uniform(0.01, 0.2)
    noise = sigma * rng.standard_normal((2, 128, 128))
    assert haar_noise(noise) == pytest.approx(sigma, rel=0.08)
    assert spectral_noise(noise, motion_psf(9, 30, 0.85)) == pytest.approx(sigma, rel=0.15)


@pytest.mark.parametrize("psf", [gaussian_psf(1.5), motion_psf(9, 30, 0.85)], ids=["gaussian", "motion"])
def test_spectral_estimate_sees_through_blurred_content(rng, psf):
    # Picture content fools the Haar estimate; the blur leaves none where the spectral one looks.
    blurred = convolve2d(synthetic_image(rng, shape=(128, 128)), psf, mode="same")
    sigma = 1e-3
    noisy = (blurred + sigma * rng.standard_normal(blurred.shape))[None]
    assert estimate_noise(noisy, psf) == pytest.approx(sigma, rel=0.3)
    assert estimate_noise(noisy, psf) <= haar_noise(noisy)
    assert estimate_noise(noisy[:, :5, :], psf) == haar_noise(noisy[:, :5, :])  # too small for the spectrum


def test_quantization_noise():
    assert quantization_noise(np.uint8) == pytest.approx(1 / 255 / np.sqrt(12))
    assert quantization_noise(np.uint16) == pytest.approx(1 / 65535 / np.sqrt(12))
    assert quantization_noise(np.float32) == pytest.approx(np.finfo(np.float32).eps / np.sqrt(12))


def test_lambda_grows_with_noise(rng):
    blurred = convolve2d(synthetic_image(rng), np.full((3, 3), 1 / 9), mode="same")
    noise = rng.standard_normal(blurred.shape)
    lams = [choose_lambda((blurred + s * noise)[None], s) for s in (0.001, 0.01, 0.05)]
    assert lams[0] < lams[1] < lams[2]


@pytest.mark.parametrize("precondition", ["causal", "fourier"])
def test_tikhonov_without_penalty_preconditioned_is_the_exact_inverse(rng, precondition):
    psf = stable_quadrant_psf(rng, "TR")
    kernel = exact_kernel(psf)
    blurred = rng.standard_normal((2, 12, 17))
    result = deblur_tikhonov(blurred, psf, 0.0, CPU, precondition=precondition, kernel=kernel, rtol=1e-12)
    assert result.converged
    assert result.iterations <= (2 if precondition == "causal" else 100)
    np.testing.assert_allclose(result.image, deblur_exact(blurred, kernel, CPU), atol=1e-8)


def test_fourier_preconditioner_cuts_iterations(rng):
    psf = motion_psf(9, 30, 0.85)
    blurred = (convolve2d(synthetic_image(rng, shape=(64, 64)), psf, mode="same")
               + 0.002 * rng.standard_normal((64, 64)))[None]
    plain = deblur_tikhonov(blurred, psf, 1e-3, CPU, precondition="none", rtol=1e-8, maxiter=2000)
    fourier = deblur_tikhonov(blurred, psf, 1e-3, CPU, precondition="fourier", rtol=1e-8, maxiter=2000)
    assert fourier.converged and fourier.iterations < plain.iterations
    np.testing.assert_allclose(fourier.image, plain.image, atol=1e-5)


def test_exact_with_extension_is_the_solve_of_the_mirrored_input(rng):
    import invconv_cupy as ic

    psf = stable_quadrant_psf(rng, "BR")
    kernel = exact_kernel(psf)
    blurred = rng.standard_normal((1, 9, 11))
    result = deblur_exact(blurred, kernel, CPU, extension=4)
    mirrored = np.pad(blurred, ((0, 0), (0, 4), (0, 4)), mode="symmetric")  # BR reads down and right
    expected = ic.solve(mirrored[:, None], kernel.as_weight(), "BR")[:, 0, :9, :11]
    np.testing.assert_allclose(result, expected, atol=1e-12)


@pytest.mark.parametrize("bad", [dict(boundary="periodic"), dict(precondition="jacobi"),
                                 dict(precondition="causal"), dict(precondition="causal", boundary="unknown")])
def test_tikhonov_refuses_bad_options(rng, bad):
    psf = stable_quadrant_psf(rng, "TL")
    kernel = exact_kernel(psf) if "boundary" in bad and bad.get("precondition") == "causal" else None
    with pytest.raises(ValueError):
        deblur_tikhonov(rng.standard_normal((1, 8, 8)), psf, 0.1, CPU, kernel=kernel, **bad)
