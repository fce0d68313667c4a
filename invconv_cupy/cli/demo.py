"""``invconv-deblur demo``: every method on scikit-image's camera picture, no network, no files needed.

The picture (in scikit-image's wheel) is blurred with a built-in causal motion
kernel and cropped by ``MARGIN`` pixels on every side, as a camera sees a part of a
larger scene (so the blurred frame holds light from outside it); Gaussian noise of
standard deviation ``NOISE`` is added and the result rounded to 8 bits, exactly
what ``blurred.png`` holds. It is deblurred by ``apply``'s default (which picks
exact or tikhonov and says why), the exact inverse, tikhonov, and scikit-image's
unsupervised Wiener and Richardson-Lucy; ours use ``apply``'s default boundary
model for image files (unknown). PSNR and SSIM are measured on the whole frame
and on its interior (``MARGIN`` pixels from each edge left out, where the
references' periodic or zero boundary matters less).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from scipy.signal import convolve2d

from .apply import Plan, deblur
from .device import resolve_device
from .errors import CliError
from .images import encode, write_image
from .output import write_array
from .psf import exact_kernel, motion_psf
from .stability import response_for

#: The built-in blur: 9 pixels at 30 degrees, taps falling as 0.85**distance (a stable inverse).
MOTION = {"length": 9, "angle": 30.0, "decay": 0.85}
NOISE = 0.002
SEED = 0
RL_ITERATIONS = 30
MARGIN = 16
FILES = ("comparison.png", "blurred.png", "psf.npy", "sharp.png")


def _camera(downsample: int) -> np.ndarray:
    from skimage import data

    image = data.camera().astype(np.float64) / 255.0
    h, w = (s // downsample * downsample for s in image.shape)
    return image[:h, :w].reshape(h // downsample, downsample, w // downsample, downsample).mean(axis=(1, 3))


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def _scores(sharp: np.ndarray, image: np.ndarray) -> tuple[float, float, float]:
    """PSNR on the whole frame, PSNR and SSIM on the interior."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    inner = (slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))
    clipped = np.clip(image, 0.0, 1.0)
    return (
        peak_signal_noise_ratio(sharp, clipped, data_range=1.0),
        peak_signal_noise_ratio(sharp[inner], clipped[inner], data_range=1.0),
        structural_similarity(sharp[inner], clipped[inner], data_range=1.0),
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

    scene = _camera(args.downsample)
    psf = motion_psf(**MOTION)
    kernel = exact_kernel(psf)
    rng = np.random.default_rng(SEED)
    frame = (slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))
    sharp = scene[frame]
    blurred = convolve2d(scene, psf, mode="same")[frame] + NOISE * rng.standard_normal(sharp.shape)
    blurred = encode(blurred[None], np.dtype(np.uint8))[None] / 255.0
    response = response_for(kernel, sharp.shape)

    def ours(method):
        plan = Plan(method, psf, kernel, None, "unknown", "fourier", None, 300, 1e-5)
        return deblur(blurred, plan, "unknown", response, compute)

    (default, how), t_default = _timed(ours, None)
    (exact, _), t_exact = _timed(ours, "exact")
    (tik, tik_how), t_tik = _timed(ours, "tikhonov")
    (wiener, _), t_wiener = _timed(unsupervised_wiener, blurred[0], psf, rng=SEED)
    rl, t_rl = _timed(richardson_lucy, blurred[0], psf, num_iter=RL_ITERATIONS)
    rows = [
        ("blurred (input)", blurred[0], 0.0),
        (f"default ({how.split(' (')[0]}, see below)", default[0], t_default),
        ("exact (invconv solve)", exact[0], t_exact),
        (f"tikhonov ({tik_how.split('(')[1].split(', ')[0]})", tik[0], t_tik),
        ("wiener (skimage, unsupervised)", wiener, t_wiener),
        (f"richardson-lucy (skimage, {RL_ITERATIONS} it.)", rl, t_rl),
    ]

    h, w = sharp.shape
    print(
        f"camera {h}x{w} cut from a {scene.shape[0]}x{scene.shape[1]} scene, causal motion blur (length "
        f"{MOTION['length']}, angle {MOTION['angle']:g}, decay {MOTION['decay']}; orientation {kernel.orientation}), "
        f"noise sigma {NOISE}, 8-bit, device {compute.name}"
    )
    print(f"PSNR on the whole frame and on the interior ({MARGIN}-pixel border left out), SSIM on the interior")
    print(f"{'method':<44} {'PSNR dB':>8} {'interior':>8} {'SSIM':>6} {'seconds':>8}")
    panels = [("sharp", sharp)]
    for label, image, seconds in rows:
        p, p_inner, s_inner = _scores(sharp, image)
        print(f"{label:<44} {p:8.2f} {p_inner:8.2f} {s_inner:6.3f} {seconds:8.3f}")
        panels.append((f"{label.split(' (')[0]}  {p:.1f} dB", image))
    print(f"default: {how.split('; default method: ')[1]}")

    comparison = _panel(panels, columns=4)
    write_image(out / "comparison.png", comparison[None] / 255.0, np.dtype(np.uint8))
    write_image(out / "blurred.png", blurred, np.dtype(np.uint8))
    write_image(out / "sharp.png", sharp[None], np.dtype(np.uint8))
    write_array(out / "psf.npy", psf)
    print(f"wrote {', '.join(str(out / name) for name in FILES)}")
