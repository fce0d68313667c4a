"""Helpers for the invconv-deblur tests: synthetic images, PSFs, and running the CLI in-process."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

for _module in ("skimage", "PIL", "tqdm", "tifffile"):
    pytest.importorskip(_module, reason="the cli extra (scikit-image, Pillow, tqdm) is not installed")

from invconv_cupy.cli.main import main  # noqa: E402
from invconv_cupy.cli.psf import quadrant_slices  # noqa: E402


def run_cli(capsys, *argv):
    """Run ``invconv-deblur argv`` in-process; return (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def synthetic_image(rng, shape=(48, 64), channels=None):
    """A float image in [0.1, 0.9]: smooth texture plus sharp-edged rectangles (what deblurring restores)."""
    layers = []
    for _ in range(channels or 1):
        img = gaussian_filter(rng.random(shape), 2.0)
        img = (img - img.min()) / (np.ptp(img) or 1.0) * 0.3
        for _ in range(6):
            r0, c0 = rng.integers(0, shape[0] - 8), rng.integers(0, shape[1] - 8)
            img[r0 : r0 + rng.integers(4, 16), c0 : c0 + rng.integers(4, 16)] += rng.uniform(0.2, 0.5)
        layers.append(0.1 + 0.8 * np.clip(img, 0, 1))
    return layers[0] if channels is None else np.stack(layers, axis=-1)


def stable_quadrant_psf(rng, orientation, kh=3, kw=4):
    """A random PSF in ``orientation``'s quadrant whose centre outweighs all other taps (a stable inverse)."""
    psf = np.zeros((2 * kh - 1, 2 * kw - 1))
    quadrant = psf[quadrant_slices(psf.shape, orientation)]
    quadrant[...] = rng.uniform(0.0, 1.0, quadrant.shape) * (0.6 / quadrant.size)
    psf[kh - 1, kw - 1] = 1.0
    return psf / psf.sum()


def psnr(reference, image):
    """PSNR in dB with the reference's value range as the peak."""
    mse = float(np.mean((np.asarray(image, float) - reference) ** 2))
    return np.inf if mse == 0 else 10 * np.log10(float(np.ptp(reference)) ** 2 / mse)


def listing(folder):
    """Every path under ``folder`` (to check that nothing was written)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))
