"""Deblurring methods: noise estimate, lambda choice, the preconditioner's condition estimate and CG."""

import numpy as np
import pytest
from scipy.signal import convolve2d

from cli_util import stable_quadrant_psf, synthetic_image
from invconv_cupy.cli.device import resolve_device
from invconv_cupy.cli.methods import (
    choose_lambda,
    condition_estimates,
    deblur_exact,
    deblur_tikhonov,
    estimate_noise,
    pick_preconditioner,
)
from invconv_cupy.cli.psf import exact_kernel

CPU = resolve_device("cpu")


def test_noise_estimate_on_white_noise(rng):
    sigma = rng.uniform(0.01, 0.2)
    assert estimate_noise(sigma * rng.standard_normal((2, 128, 128))) == pytest.approx(sigma, rel=0.08)


def test_lambda_grows_with_noise(rng):
    blurred = convolve2d(synthetic_image(rng), np.full((3, 3), 1 / 9), mode="same")
    noise = rng.standard_normal(blurred.shape)
    lams = [choose_lambda((blurred + s * noise)[None]) for s in (0.001, 0.01, 0.05)]
    assert lams[0] < lams[1] < lams[2]


def test_condition_estimates_and_pick(rng):
    psf = stable_quadrant_psf(rng, "BL")
    kernel = exact_kernel(psf)
    plain, pre = condition_estimates(psf, (32, 40), 0.0)
    assert pre == pytest.approx(1.0) and plain > 1.0
    assert pick_preconditioner(psf, kernel, (32, 40), 1e-6) is kernel
    assert pick_preconditioner(psf, kernel, (32, 40), 10.0) is None
    assert pick_preconditioner(psf, None, (32, 40), 1e-6) is None


def test_tikhonov_without_penalty_preconditioned_is_the_exact_inverse(rng):
    psf = stable_quadrant_psf(rng, "TR")
    kernel = exact_kernel(psf)
    blurred = rng.standard_normal((2, 12, 17))
    result = deblur_tikhonov(blurred, psf, 0.0, CPU, preconditioner=kernel, rtol=1e-12)
    assert result.converged and result.iterations <= 2
    np.testing.assert_allclose(result.image, deblur_exact(blurred, kernel, CPU), atol=1e-9)
