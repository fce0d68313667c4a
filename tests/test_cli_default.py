"""apply's default method (chosen by the data) and the boundary models (unknown, zero)."""

import re

import numpy as np
import pytest
from scipy.signal import convolve2d

from cli_util import psnr, run_cli, synthetic_image
from invconv_cupy.cli import psf as P
from invconv_cupy.cli.choice import choose
from invconv_cupy.cli.device import resolve_device
from invconv_cupy.cli.methods import deblur_exact, deblur_tikhonov
from invconv_cupy.cli.stability import response_for

CPU = resolve_device("cpu")
DEMO_MOTION = P.motion_psf(9, 30, 0.85)


def quarter_gaussian(sigma=1.5):
    """A causal (one-quadrant) blur whose inverse settles within 15 pixels and amplifies noise about 10x."""
    psf = P.gaussian_psf(sigma)
    c = psf.shape[0] // 2
    psf[:c, :] = 0
    psf[:, :c] = 0
    return psf / psf.sum()


QUARTER = quarter_gaussian()


def _apply(capsys, tmp_path, blurred, *options):
    np.save(tmp_path / "b.npy", blurred)
    code, out, err = run_cli(capsys, "apply", tmp_path / "b.npy", *options, "-o", tmp_path / "x.npy", "--force")
    assert code == 0, err
    return np.load(tmp_path / "x.npy"), [line for line in out.splitlines() if " -> " in line]


@pytest.mark.parametrize("noise", [0.005, 0.02])
def test_default_is_not_exact_where_noise_makes_exact_worse(tmp_path, capsys, rng, noise):
    # Before: the default was exact whenever its inverse was stable, whatever the noise (worse than the input).
    sharp = synthetic_image(rng, shape=(64, 64))
    blurred = convolve2d(sharp, QUARTER, mode="same") + noise * rng.standard_normal(sharp.shape)
    np.save(tmp_path / "psf.npy", QUARTER)
    default, lines = _apply(capsys, tmp_path, blurred, "--psf", tmp_path / "psf.npy")
    exact, _ = _apply(capsys, tmp_path, blurred, "--psf", tmp_path / "psf.npy", "--method", "exact")
    assert len(lines) == 1
    assert re.search(r": tikhonov \(.*; default method: tikhonov: predicted rms error [0-9.e-]+ against exact's "
                     r"[0-9.e-]+ \(noise [0-9.e-]+ amplified [0-9.]+x by the exact inverse\)", lines[0]), lines[0]
    assert psnr(sharp, default) > psnr(sharp, blurred) + 1
    assert psnr(sharp, default) > psnr(sharp, exact) + 1


def test_default_is_exact_where_the_noise_is_negligible(tmp_path, capsys, rng):
    from scipy.ndimage import gaussian_filter

    # Smooth content: the blur leaves nothing of it at high frequencies, so the tiny noise can be measured there.
    sharp = gaussian_filter(rng.random((64, 64)), 3.0)
    sharp = 0.2 + 0.6 * (sharp - sharp.min()) / np.ptp(sharp)
    blurred = convolve2d(sharp, QUARTER, mode="same") + 1e-7 * rng.standard_normal(sharp.shape)
    np.save(tmp_path / "psf.npy", QUARTER)
    default, lines = _apply(capsys, tmp_path, blurred, "--psf", tmp_path / "psf.npy")
    assert ": exact (TL, zero boundary); default method: exact: predicted rms error" in lines[0]
    assert psnr(sharp, default) > 80


def test_predicted_errors_match_the_measured_ones(rng):
    sharp = synthetic_image(rng, shape=(160, 160))
    kernel = P.exact_kernel(DEMO_MOTION)
    response = response_for(kernel, sharp.shape)
    sigma = 0.004
    blurred = (convolve2d(sharp, DEMO_MOTION, mode="same") + sigma * rng.standard_normal(sharp.shape))[None]
    exact = deblur_exact(blurred, kernel, CPU)
    tikhonov = deblur_tikhonov(blurred, DEMO_MOTION, 3e-3, CPU).image
    choice = choose(exact, tikhonov, DEMO_MOTION, 3e-3, sigma, response)
    assert choice.method == "tikhonov"
    measured_exact = np.sqrt(np.mean((exact[0] - sharp) ** 2))
    measured_tikhonov = np.sqrt(np.mean((tikhonov[0] - sharp) ** 2))
    assert choice.exact_rms == pytest.approx(measured_exact, rel=0.15)
    assert measured_tikhonov / 2 < choice.tikhonov_rms < 2 * measured_tikhonov  # a noisy estimate: within 2x


def _cropped_scene(rng, psf, noise, shape=(64, 72), margin=12):
    """A blurred frame cut from a larger blurred scene, as a camera sees it, and its sharp frame."""
    scene = synthetic_image(rng, shape=(shape[0] + 2 * margin, shape[1] + 2 * margin))
    frame = (slice(margin, -margin), slice(margin, -margin))
    blurred = convolve2d(scene, psf, mode="same")[frame]
    return scene[frame], blurred + noise * rng.standard_normal(blurred.shape)


@pytest.mark.parametrize("source", [["--gaussian", 1.5], ["--motion", 9, 30, "--decay", 0.85]])
def test_unknown_boundary_beats_zero_on_a_cropped_scene(tmp_path, capsys, rng, source):
    # Before: the zero-boundary model rang along every edge and scored below the blurred input.
    sharp, blurred = _cropped_scene(rng, P.gaussian_psf(1.5) if source[0] == "--gaussian" else DEMO_MOTION, 0.003)
    unknown, lines = _apply(capsys, tmp_path, blurred, *source, "--method", "tikhonov", "--boundary", "unknown")
    assert "unknown boundary" in lines[0]
    zero, _ = _apply(capsys, tmp_path, blurred, *source, "--method", "tikhonov", "--boundary", "zero")
    assert psnr(sharp, unknown) > psnr(sharp, blurred) + 2
    assert psnr(sharp, unknown) > psnr(sharp, zero) + 2


def test_exact_with_unknown_boundary_beats_its_zero_boundary_on_a_cropped_scene(tmp_path, capsys, rng):
    sharp, blurred = _cropped_scene(rng, QUARTER, 0.0)
    np.save(tmp_path / "psf.npy", QUARTER)
    unknown, lines = _apply(capsys, tmp_path, blurred, "--psf", tmp_path / "psf.npy", "--method", "exact",
                            "--boundary", "unknown")
    assert "exact (TL, unknown boundary)" in lines[0]
    zero, _ = _apply(capsys, tmp_path, blurred, "--psf", tmp_path / "psf.npy", "--method", "exact")
    assert psnr(sharp, unknown) > psnr(sharp, zero) + 5


def test_image_files_default_to_the_unknown_boundary_and_npy_to_zero(tmp_path, capsys, rng):
    from PIL import Image

    sharp, blurred = _cropped_scene(rng, P.gaussian_psf(1.0), 0.0)
    Image.fromarray(np.rint(np.clip(blurred, 0, 1) * 255).astype(np.uint8)).save(tmp_path / "b.png")
    code, out, err = run_cli(capsys, "apply", tmp_path / "b.png", "--gaussian", 1.0, "-o", tmp_path / "x.png")
    assert code == 0, err
    assert "unknown boundary" in out
    _, lines = _apply(capsys, tmp_path, blurred, "--gaussian", 1.0)
    assert "zero boundary" in lines[0]


def _dense_blur(psf, shape):
    """The matrix of ``convolve2d(x, psf, mode="same")`` on images of ``shape``."""
    n = shape[0] * shape[1]
    columns = []
    for k in range(n):
        e = np.zeros(n)
        e[k] = 1
        columns.append(convolve2d(e.reshape(shape), psf, mode="same").ravel())
    return np.array(columns).T


def _dense_gradient(shape):
    """Forward differences along both axes (no wrap-around) as one matrix."""
    h, w = shape
    rows = []
    for i in range(h):
        for j in range(w):
            for di, dj in ((0, 1), (1, 0)):
                if i + di < h and j + dj < w:
                    r = np.zeros(h * w)
                    r[(i + di) * w + j + dj], r[i * w + j] = 1, -1
                    rows.append(r)
    return np.array(rows)


@pytest.mark.parametrize("boundary", ["zero", "unknown"])
def test_tikhonov_matches_the_dense_least_squares_solution(rng, boundary):
    psf = rng.uniform(0, 1, (3, 5))
    psf /= psf.sum()
    h, w = 7, 9
    mh, mw = (1, 2) if boundary == "unknown" else (0, 0)
    ext = (h + 2 * mh, w + 2 * mw)
    blur = _dense_blur(psf, ext)
    frame = np.zeros(ext, bool)
    frame[mh : mh + h, mw : mw + w] = True
    model = blur[frame.ravel()]  # the observed pixels of the blurred extended picture
    gradient = _dense_gradient(ext)
    lam = rng.uniform(0.01, 0.1)
    y = rng.standard_normal((h, w))
    x = np.linalg.solve(model.T @ model + lam * gradient.T @ gradient, model.T @ y.ravel()).reshape(ext)
    result = deblur_tikhonov(y[None], psf, lam, CPU, boundary=boundary, rtol=1e-12, maxiter=5000)
    assert result.converged
    np.testing.assert_allclose(result.image[0], x[mh : mh + h, mw : mw + w], atol=1e-8)


def test_no_exact_where_its_edge_effects_cover_the_frame(rng):
    # A thin frame: the exact inverse's boundary band (47 px for this kernel) leaves too little to compare on.
    kernel = P.exact_kernel(DEMO_MOTION)
    response = response_for(kernel, (40, 200))
    exact, tikhonov = rng.standard_normal((2, 1, 40, 200))
    choice = choose(exact, tikhonov, DEMO_MOTION, 1e-3, 1e-6, response, "unknown")
    assert choice.method == "tikhonov"
    assert choice.reason() == ("tikhonov: the exact inverse's edge effects reach 47 px into the frame, too far to "
                               "predict its error")
