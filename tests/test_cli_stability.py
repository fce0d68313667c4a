"""The exact inverse's stability test: what it measures, its numbers, and the README's claims about it."""

import re
from pathlib import Path

import numpy as np
import pytest

from cli_util import run_cli, synthetic_image
from invconv_cupy.cli import psf as P
from invconv_cupy.cli.stability import DECAY_TOLERANCE, check_stable, inverse_response, response_for

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("orientation", ["TL", "TR", "BL", "BR"])
def test_decay_and_gain_of_a_geometric_inverse(rng, orientation):
    # centre 1, one neighbour -r towards the orientation's corner: the inverse's response is r**distance.
    r = rng.uniform(0.3, 0.8)
    weight = np.zeros((1, 2))
    anchor, other = (1, 0) if orientation[1] == "L" else (0, 1)
    weight[0, anchor], weight[0, other] = 1.0, -r
    response = inverse_response(P.CausalKernel(weight, orientation), 40)
    for distance in rng.integers(0, 39, 5):
        assert response.decay(int(distance)) == pytest.approx(r ** int(distance), rel=1e-9)
    h, w = rng.integers(1, 40, 2)
    assert response.noise_gain((h, w)) == pytest.approx(sum(r ** (2 * j) for j in range(w)), rel=1e-9)
    assert response.settled_distance(1e-3) == int(np.ceil(np.log(1e-3) / np.log(r) - 1e-12))


def test_noise_gain_is_the_variance_the_exact_inverse_gives_white_noise(rng):
    import invconv_cupy as ic

    kernel = P.exact_kernel(P.motion_psf(5, 30, 0.7))
    response = response_for(kernel, (64, 64))
    noise = rng.standard_normal((400, 1, 64, 64))
    out = ic.solve(noise, kernel.as_weight(), kernel.orientation)
    far = (slice(None), 0) + ((-1 if kernel.orientation[0] == "T" else 0), (-1 if kernel.orientation[1] == "L" else 0))
    assert np.var(out[far]) == pytest.approx(response.noise_gain((64, 64)), rel=0.2)


def test_slowly_decaying_inverse_is_stable_on_a_large_image_and_refused_with_numbers_on_a_small_one():
    # The issue's case: refused before although its response falls to 4e-8 at 160 px.
    kernel = P.exact_kernel(P.motion_psf(5, 0, 0.85))
    response = response_for(kernel, (256, 256))
    check_stable(response, (256, 256))
    small = response_for(kernel, (40, 64))
    with pytest.raises(P.NotSafeForExact) as refused:
        check_stable(small, (40, 64))
    message = str(refused.value)
    decay = float(re.search(r"at 63 px it is still ([0-9.e-]+) of its peak", message).group(1))
    assert decay == pytest.approx(small.decay(63), rel=0.05) and decay > DECAY_TOLERANCE
    assert "decays too slowly" in message and "40 x 64 image" in message and "--method tikhonov" in message


def test_marginal_and_growing_inverses_are_refused_and_say_which():
    line = P.exact_kernel(P.motion_psf(5, 0))  # 1 + z + ... + z^4: zeros on the unit circle
    with pytest.raises(P.NotSafeForExact, match="does not decay: at 99 px it is still"):
        check_stable(response_for(line, (100, 80)), (100, 80))
    psf = np.zeros((3, 3))
    psf[1, 1], psf[1, 2] = 0.1, 0.9  # 0.1 + 0.9 z: the inverse grows like 9**distance
    grows = P.exact_kernel(psf)
    with pytest.raises(P.NotSafeForExact, match="grows until it overflows"):
        check_stable(response_for(grows, (400, 400)), (400, 400))


def test_exact_accepts_the_issue_psf_on_a_256_image(tmp_path, capsys, rng):
    from scipy.signal import convolve2d

    psf = P.motion_psf(5, 0, 0.85)
    sharp = synthetic_image(rng, shape=(256, 256))
    np.save(tmp_path / "b.npy", convolve2d(sharp, psf, mode="same"))
    code, out, err = run_cli(capsys, "apply", tmp_path / "b.npy", "--motion", 5, 0, "--decay", 0.85,
                             "--method", "exact", "-o", tmp_path / "x.npy")
    assert code == 0, err
    error = np.abs(np.load(tmp_path / "x.npy") - sharp).max()
    assert error < 1e-8, error


def test_readme_claim_about_motion_angles_is_measured():
    text = README.read_text()
    claim = re.search(r"`--motion 9 A --decay 0\.85` passes at (\d+) of 36 angles \(A = 0, 10, \.\.\., 350\) "
                      r"on a (\d+) x \2 image", " ".join(text.split()))
    assert claim, "README must state how many of 36 angles pass"
    stated, size = int(claim.group(1)), int(claim.group(2))
    passing = 0
    for angle in range(0, 360, 10):
        kernel = P.exact_kernel(P.motion_psf(9, angle, 0.85))
        try:
            check_stable(response_for(kernel, (size, size)), (size, size))
            passing += 1
        except P.NotSafeForExact:
            pass
    assert passing == stated
