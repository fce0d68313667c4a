"""invconv-deblur fit: size bound, progress on a terminal, random windows, the stability penalty and its verdict."""

import io
import shlex

import numpy as np
import pytest
from scipy.signal import convolve2d

from cli_util import run_cli, synthetic_image
from invconv_cupy.cli import fit as F
from invconv_cupy.cli import psf as P

ORIENTATIONS = ("TL", "TR", "BL", "BR")


def _pair(tmp_path, rng, psf, shape=(48, 64)):
    sharp = synthetic_image(rng, shape=shape)
    np.save(tmp_path / "s.npy", sharp)
    np.save(tmp_path / "b.npy", convolve2d(sharp, psf, mode="same"))
    return sharp


def _fit(capsys, d, *options):
    return run_cli(capsys, "fit", "--sharp", d / "s.npy", "--blurred", d / "b.npy", "-o", d / "k.npy", *options)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_line_on_a_terminal_only(tmp_path, capsys, rng, monkeypatch):
    # Before: every fit was silent.
    psf = np.zeros((3, 3))
    psf[1, 1], psf[2, 2] = 0.8, 0.2
    _pair(tmp_path, rng, psf)
    code, _, err = _fit(capsys, tmp_path, "--size", 2, "--orientation", "TL", "--maxiter", 5)
    assert code == 0 and err == ""
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    code, out, _ = _fit(capsys, tmp_path, "--size", 2, "--orientation", "TL", "--maxiter", 5, "--force")
    assert code == 0, out
    progress = terminal.getvalue()
    assert "fit TL" in progress and "loss=" in progress and "/5" in progress


def test_size_bound_scales_with_the_image():
    assert F.max_size((303, 384)) == 32  # the issue's --size 200 is refused
    assert F.max_size((40, 90)) == 10
    assert F.max_size((3, 3)) == 1


def test_windows_of_a_large_image(rng):
    windows = F.fit_windows((700, 900), 5, rng)
    side = max(F.MIN_WINDOW, F.WINDOW_PER_TAP * 5)
    assert len(windows) == int(np.ceil(F.FIT_PIXELS / side**2))
    for rows, cols in windows:
        assert rows.stop - rows.start == side and cols.stop - cols.start == side
        assert 4 <= rows.start and rows.stop <= 696 and 4 <= cols.start and cols.stop <= 896  # room for the halo
    assert len({(r.start, c.start) for r, c in windows}) > 1
    assert F.fit_windows((200, 300), 5, rng) == [(slice(4, 196), slice(4, 296))]


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_fit_on_random_windows_recovers_the_kernel(tmp_path, capsys, rng, monkeypatch, orientation):
    # The light each window's halo sends in is taken out exactly: no bias from the picture outside it.
    monkeypatch.setattr(F, "FIT_PIXELS", 40 * 40)
    monkeypatch.setattr(F, "MIN_WINDOW", 24)
    psf = np.zeros((3, 3))
    psf[P.quadrant_slices(psf.shape, orientation)] = rng.uniform(0, 0.15, (2, 2))
    psf[1, 1] = 0.7
    _pair(tmp_path, rng, psf, shape=(64, 80))
    code, out, err = _fit(capsys, tmp_path, "--size", 2, "--orientation", orientation)
    assert code == 0, err
    assert "on 3 random 24 px windows" in out
    np.testing.assert_allclose(np.load(tmp_path / "k.npy"), psf, atol=1e-5)


def test_stability_penalty_and_the_closing_advice(tmp_path, capsys, rng, monkeypatch):
    # The true blur (0.5 + 0.5 z) has a zero on the unit circle: its inverse never decays, and without the
    # penalty the fit comes as close to it as the data ask.
    psf = np.zeros((1, 3))
    psf[0, 1], psf[0, 2] = 0.5, 0.5
    _pair(tmp_path, rng, psf)
    monkeypatch.chdir(tmp_path)
    code, out, err = _fit(capsys, tmp_path, "--size", 2, "--orientation", "TL", "--noise", 0)
    assert code == 0, err
    last = out.splitlines()[-1]
    assert "fit: the fitted kernel is not stable for exact" in last and "does not decay" in last
    command = last.split("deblur with: ")[1]
    assert "--method tikhonov" in command
    code, _, err = run_cli(capsys, *shlex.split(command)[1:])
    assert code == 0, err  # the advised command works
    code, out, err = _fit(capsys, tmp_path, "--size", 2, "--orientation", "TL", "--noise", 0.01, "--force")
    assert code == 0, err
    last = out.splitlines()[-1]
    assert "fit: the fitted kernel's exact inverse is stable on this image" in last
    kernel = P.exact_kernel(np.load(tmp_path / "k.npy"))
    assert abs(kernel.weight[-1, -1]) > abs(kernel.weight).sum() - abs(kernel.weight[-1, -1])  # centre dominates
    code, _, err = run_cli(capsys, *shlex.split(last.split("deblur with: ")[1])[1:], "--force")
    assert code == 0, err
