"""Deblurring methods: noise estimates, lambda choice, preconditioners and CG."""

import numpy as np
import pytest
from scipy.signal import convolve2d

from cli_util import stable_quadrant_psf, synthetic_image
from invconv_cupy.cli.device import resolve_device
from invconv_cupy.cli.methods import choose_lambda, deblur_exact, deblur_tikhonov
from invconv_cupy.cli.noise import (
    blur_symbol, estimate_noise, gradient_symbol, haar_noise, quantization_noise, spectral_noise, spectrum_mean,
)
from invconv_cupy.cli.psf import exact_kernel, gaussian_psf, motion_psf, psf_grid

CPU = resolve_device("cpu")


def test_noise_estimates_on_white_noise(rng):
    sigma = rng.uniform(0.01, 0.2)
    noise = sigma * rng.standard_normal((2, 128, 128))
    assert haar_noise(noise) == pytest.approx(sigma, rel=0.08)
    # The spectral estimate uses only the frequencies the blur removes: its relative spread here
    # is about 0.07 (600 draws), so 0.35 is 5 of them; a wrong scale (e.g. a lost factor of 2) still fails.
    assert spectral_noise(noise, motion_psf(9, 30, 0.85)) == pytest.approx(sigma, rel=0.35)


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


@pytest.mark.parametrize("width", [10, 11])
def test_symbols_and_means_on_the_real_fft_half(rng, width):
    # The half grid holds every frequency of the full one; the mean over the full grid counts mirrored columns twice.
    shape = (int(rng.integers(5, 12)), width)
    psf = rng.standard_normal((3, 5))
    full = np.abs(np.fft.fft2(psf_grid(psf, shape))) ** 2
    np.testing.assert_allclose(blur_symbol(psf, shape), full[:, : width // 2 + 1], rtol=1e-12, atol=1e-12)
    fy, fx = (2 - 2 * np.cos(2 * np.pi * np.fft.fftfreq(n)) for n in shape)
    gradient = fy[:, None] + fx[None, :]
    np.testing.assert_allclose(gradient_symbol(shape), gradient[:, : width // 2 + 1], rtol=0, atol=1e-12)
    spectrum = full / (full + 0.1 * gradient + 0.5)
    assert spectrum_mean(spectrum[:, : width // 2 + 1], width) == pytest.approx(np.mean(spectrum), rel=1e-12)


def _dense_convolution(psf, unknowns, frame):
    """The matrix of ``x -> convolve2d(x, psf, mode="same")[frame]`` for ``x`` of shape ``unknowns``."""
    columns = np.eye(np.prod(unknowns)).reshape(-1, *unknowns)
    return np.stack([convolve2d(c, psf, mode="same")[frame].ravel() for c in columns], axis=1)


def _dense_gradient(shape):
    """The matrix of the forward differences along both axes (no wrap-around)."""
    n = np.prod(shape)
    index = np.arange(n).reshape(shape)
    rows = []
    for a, b in ((index[:, 1:], index[:, :-1]), (index[1:, :], index[:-1, :])):
        d = np.zeros((a.size, n))
        d[np.arange(a.size), a.ravel()] = 1.0
        d[np.arange(a.size), b.ravel()] = -1.0
        rows.append(d)
    return np.vstack(rows)


@pytest.mark.parametrize("boundary", ["zero", "unknown"])
def test_tikhonov_is_the_dense_least_squares_solution(rng, boundary):
    # Any PSF (not causal, no symmetry), two channels: CG to 1e-12 against the normal equations solved densely.
    psf = rng.uniform(0.0, 1.0, (3, 5))
    psf[1, 2] += 2.0
    psf /= psf.sum()
    (h, w), lam = rng.integers(6, 10, 2), rng.uniform(0.01, 0.1)
    mh, mw = (1, 2) if boundary == "unknown" else (0, 0)
    unknowns, frame = (h + 2 * mh, w + 2 * mw), (slice(mh, mh + h), slice(mw, mw + w))
    blurred = rng.standard_normal((2, h, w))
    k, d = _dense_convolution(psf, unknowns, frame), _dense_gradient(unknowns)
    expected = np.linalg.solve(k.T @ k + lam * d.T @ d, k.T @ blurred.reshape(2, -1).T).T.reshape(2, *unknowns)
    result = deblur_tikhonov(blurred, psf, lam, CPU, boundary=boundary, rtol=1e-13, maxiter=1000)
    assert result.converged
    np.testing.assert_allclose(result.image, expected[(Ellipsis, *frame)], rtol=0, atol=1e-9)
