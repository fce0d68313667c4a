"""``invconv-deblur demo``: every method on scikit-image's camera picture, no network, no files needed.

The picture (in scikit-image's wheel) is blurred with a built-in causal motion
kernel (zero boundary, the PSF convention of ``apply``), Gaussian noise of
standard deviation ``NOISE`` is added, and it is deblurred by the exact inverse,
tikhonov (data-driven lambda), and scikit-image's unsupervised Wiener and
Richardson-Lucy. PSNR and SSIM are measured on the interior (``MARGIN`` pixels
from each edge left out: the references model the boundary differently).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from scipy.signal import convolve2d

from .device import resolve_device
from .errors import CliError
from .images import write_image
from .methods import choose_lambda, deblur_exact, deblur_tikhonov, pick_preconditioner
from .output import write_array
from .psf import exact_kernel, motion_psf

#: The built-in blur: 9 pixels at 30 degrees, taps falling as 0.85**distance (a stable inverse).
MOTION = {"length": 9, "angle": 30.0, "decay": 0.85}
NOISE = 0.002
SEED = 0
RL_ITERATIONS = 30
MARGIN = 16
FILES = ("comparison.png", "blurred.png", "psf.npy")


def _camera(downsample: int) -> np.ndarray:
    from skimage import data

    image = data.camera().astype(np.float64) / 255.0
    h, w = (s // downsample * downsample for s in image.shape)
    return image[:h, :w].reshape(h // downsample, downsample, w // downsample, downsample).mean(axis=(1, 3))


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def _scores(sharp: np.ndarray, image: np.ndarray) -> tuple[float, float]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    inner = (slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))
    clipped = np.clip(image, 0.0, 1.0)[inner]
    return (
        peak_signal_noise_ratio(sharp[inner], clipped, data_range=1.0),
        structural_similarity(sharp[inner], clipped, data_range=1.0),
    )


def _panel(images: list[tuple[str, np.ndarray]], columns: int) -> np.ndarray:
    """A grid of labelled greyscale panels as a uint8 array."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    h, w = images[0][1].shape
    rows = -(-len(images) // columns)
    canvas = PILImage.new("L", (columns * w, rows * h), 255)
    draw = ImageDraw.Draw(canvas)
    for k, (label, image) in enumerate(images):
        x, y = (k % columns) * w, (k // columns) * h
        canvas.paste(PILImage.fromarray(np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)), (x, y))
        box = draw.textbbox((x + 4, y + 4), label)
        draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=0)
        draw.text((x + 4, y + 4), label, fill=255)
    return np.asarray(canvas)


def run(args) -> None:
    """The ``demo`` command."""
    from skimage.restoration import richardson_lucy, unsupervised_wiener

    if not 1 <= args.downsample <= 8:
        raise CliError(f"--downsample must be between 1 and 8, got {args.downsample}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} is not a folder")
    existing = [name for name in FILES if (out / name).exists()]
    if existing and not args.force:
        raise CliError(f"{out / existing[0]} exists; use --force to overwrite the demo's files")
    compute = resolve_device(args.device)

    sharp = _camera(args.downsample)
    psf = motion_psf(**MOTION)
    kernel = exact_kernel(psf)
    rng = np.random.default_rng(SEED)
    blurred = convolve2d(sharp, psf, mode="same") + NOISE * rng.standard_normal(sharp.shape)

    lam = choose_lambda(blurred[None])
    exact, t_exact = _timed(deblur_exact, blurred[None], kernel, compute)
    preconditioner = pick_preconditioner(psf, kernel, sharp.shape, lam)
    tik, t_tik = _timed(deblur_tikhonov, blurred[None], psf, lam, compute, preconditioner=preconditioner)
    (wiener, _), t_wiener = _timed(unsupervised_wiener, blurred, psf, rng=SEED)
    rl, t_rl = _timed(richardson_lucy, np.clip(blurred, 0.0, 1.0), psf, num_iter=RL_ITERATIONS)
    rows = [
        ("blurred (input)", blurred, 0.0),
        ("exact (invconv solve)", exact[0], t_exact),
        (
            f"tikhonov (lambda {tik.lam:.2g}, {tik.iterations} CG it.{', causal prec.' if preconditioner else ''})",
            tik.image[0],
            t_tik,
        ),
        ("wiener (skimage, unsupervised)", wiener, t_wiener),
        (f"richardson-lucy (skimage, {RL_ITERATIONS} it.)", rl, t_rl),
    ]

    h, w = sharp.shape
    print(
        f"camera {h}x{w}, causal motion blur (length {MOTION['length']}, angle {MOTION['angle']:g}, "
        f"decay {MOTION['decay']}; orientation {kernel.orientation}), noise sigma {NOISE}, device {compute.name}"
    )
    print(f"PSNR/SSIM on the interior ({MARGIN}-pixel border left out)")
    print(f"{'method':<52} {'PSNR dB':>8} {'SSIM':>6} {'seconds':>8}")
    panels = [("sharp", sharp)]
    for label, image, seconds in rows:
        p, s = _scores(sharp, image)
        print(f"{label:<52} {p:8.2f} {s:6.3f} {seconds:8.3f}")
        panels.append((f"{label.split(' (')[0]}  {p:.1f} dB", image))

    comparison = _panel(panels, columns=3)
    write_image(out / "comparison.png", comparison[None] / 255.0, np.dtype(np.uint8))
    write_image(out / "blurred.png", np.clip(blurred, 0.0, 1.0)[None], np.dtype(np.uint8))
    write_array(out / "psf.npy", psf)
    print(f"wrote {out / 'comparison.png'}, {out / 'blurred.png'} and {out / 'psf.npy'}")
