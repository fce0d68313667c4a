"""Deblurring benchmark: our methods against scikit-image's on its bundled pictures.

Pictures (scikit-image's wheel, no download; grey, averaged down by an integer
factor to about ``SIDE`` x ``SIDE`` pixels' worth) x PSFs (a Gaussian, a decaying
causal motion blur, a one-quadrant Gaussian) x white noise (0.001, 0.005, 0.02),
in two settings:

- ``zero``: the picture blurred with zero padding (``convolve2d(mode="same")``),
  the synthetic model;
- ``crop``: the picture blurred, then ``MARGIN`` pixels cut from every side, as a
  camera sees part of a larger scene (light from outside enters the frame).

Methods: ours through ``invconv-deblur apply``'s own code (:func:`apply.deblur`):
the default (exact or tikhonov, chosen by the data), exact, tikhonov, each with
the boundary model that matches the setting (``zero``: the model of the zero
setting, ``apply``'s default for ``.npy`` arrays; ``unknown``: the model of the
crop setting, ``apply``'s default for image files), and the default with the
other model, to show what the mismatch costs. scikit-image's
Wiener (``balance=0.1``, the value in its docstring's example: it has no
default), unsupervised Wiener and Richardson-Lucy (30 iterations, on the input
clipped to [0, 1] as it expects). Scores on the whole frame, results clipped to
[0, 1]: PSNR and SSIM (``data_range=1``), and seconds (wall clock).

Run (about half an hour on a 2-core VM; ``--quick`` runs two pictures):

    python bench/deblur_benchmark.py [--quick] [--json bench/results/deblur-latest.json]

It prints one markdown table per setting (mean over the cases; ``n/a`` where a
method does not apply, e.g. exact for a non-causal PSF), how often each method
came out worse than the blurred input, and how far the noise estimate was off.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
from scipy.signal import convolve2d

from invconv_cupy.cli.apply import Plan, deblur
from invconv_cupy.cli.device import resolve_device
from invconv_cupy.cli.noise import estimate_noise
from invconv_cupy.cli.psf import NotSafeForExact, exact_kernel, gaussian_psf, motion_psf
from invconv_cupy.cli.stability import check_stable, response_for

PICTURES = ("camera", "astronaut", "coins", "moon", "text", "chelsea")
QUICK_PICTURES = ("camera", "coins")
NOISES = (0.001, 0.005, 0.02)
SETTINGS = ("zero", "crop")
MARGIN = 16
SIDE = 128
SEED = 0
RL_ITERATIONS = 30
WIENER_BALANCE = 0.1
METHODS = (
    "blurred (input)",
    "ours: default",
    "ours: exact",
    "ours: tikhonov",
    "ours: default, the other boundary model",
    "skimage: wiener (balance 0.1)",
    "skimage: unsupervised wiener",
    f"skimage: richardson-lucy ({RL_ITERATIONS} it.)",
)


def picture(name: str) -> np.ndarray:
    """A bundled picture as grey float64 in [0, 1], averaged down by an integer factor to about ``SIDE**2`` pixels."""
    from skimage import color, data

    image = getattr(data, name)()
    if image.ndim == 3:
        image = color.rgb2gray(image[..., :3])
    image = image.astype(np.float64)
    if image.max() > 1:
        image /= 255.0
    factor = max(1, round(math.sqrt(image.size) / SIDE))
    h, w = (s // factor * factor for s in image.shape)
    return image[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def quadrant_gaussian(sigma: float = 2.0) -> np.ndarray:
    """A Gaussian kept only in its lower-right quadrant (centre row and column included): a causal blur."""
    psf = gaussian_psf(sigma)
    centre = psf.shape[0] // 2
    psf[:centre, :] = 0.0
    psf[:, :centre] = 0.0
    return psf / psf.sum()


PSFS = {
    "gaussian 1.5": lambda: gaussian_psf(1.5),
    "motion 9 30 0.85": lambda: motion_psf(9, 30, 0.85),
    "one-quadrant gaussian 2": quadrant_gaussian,
}


def blur(scene: np.ndarray, psf: np.ndarray, setting: str) -> tuple[np.ndarray, np.ndarray]:
    """(sharp, clean blurred) for ``setting``."""
    blurred = convolve2d(scene, psf, mode="same")
    if setting == "zero":
        return scene, blurred
    frame = (slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))
    return scene[frame], blurred[frame]


def scores(sharp: np.ndarray, image: np.ndarray) -> tuple[float, float]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    clipped = np.clip(image, 0.0, 1.0)
    return (
        float(peak_signal_noise_ratio(sharp, clipped, data_range=1.0)),
        float(structural_similarity(sharp, clipped, data_range=1.0)),
    )


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


#: The boundary model that matches each setting, and the other one.
BOUNDARY = {"zero": ("zero", "unknown"), "crop": ("unknown", "zero")}


def run_case(blurred, psf, setting, compute, rng):
    """Every method on one blurred image: {method: (image or None, seconds, note)}."""
    from skimage.restoration import richardson_lucy, unsupervised_wiener, wiener

    kernel, response = None, None
    try:
        kernel = exact_kernel(psf)
        response = response_for(kernel, blurred.shape)
        check_stable(response, blurred.shape)
        exact_ok = True
    except NotSafeForExact:
        exact_ok = False

    def ours(method, boundary):
        plan = Plan(method, psf, kernel, None if kernel else "not causal", boundary, "fourier", None, 300, 1e-5)
        return deblur(blurred[None], plan, boundary, response, compute)

    matching, other = BOUNDARY[setting]
    out = {"blurred (input)": (blurred, 0.0, "")}
    (image, how), seconds = timed(ours, None, matching)
    out["ours: default"] = (image[0], seconds, how)
    if exact_ok:
        (image, how), seconds = timed(ours, "exact", matching)
        out["ours: exact"] = (image[0], seconds, how)
    else:
        out["ours: exact"] = (None, 0.0, "n/a")
    (image, how), seconds = timed(ours, "tikhonov", matching)
    out["ours: tikhonov"] = (image[0], seconds, how)
    (image, how), seconds = timed(ours, None, other)
    out["ours: default, the other boundary model"] = (image[0], seconds, how)
    image, seconds = timed(wiener, blurred, psf, WIENER_BALANCE)
    out["skimage: wiener (balance 0.1)"] = (image, seconds, "")
    (image, _), seconds = timed(unsupervised_wiener, blurred, psf, rng=rng)
    out["skimage: unsupervised wiener"] = (image, seconds, "")
    image, seconds = timed(richardson_lucy, np.clip(blurred, 0.0, 1.0), psf, num_iter=RL_ITERATIONS)
    out[f"skimage: richardson-lucy ({RL_ITERATIONS} it.)"] = (image, seconds, "")
    return out


def summarize(rows: list[dict], setting: str) -> list[str]:
    """A markdown table of the means for ``setting``."""
    cases = [r for r in rows if r["setting"] == setting]
    lines = [
        f"setting {setting} (ours with the {BOUNDARY[setting][0]} boundary model): {len(cases)} cases",
        "",
        "| method | mean PSNR dB | mean SSIM | mean seconds | worse than input | cases |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for method in METHODS:
        scored = [r["methods"][method] for r in cases if r["methods"][method]["psnr"] is not None]
        if not scored:
            continue
        worse = sum(
            1 for r in cases if r["methods"][method]["psnr"] is not None
            and r["methods"][method]["psnr"] < r["methods"]["blurred (input)"]["psnr"]
        )
        note = "" if len(scored) == len(cases) else " (causal PSFs only)"
        lines.append(
            f"| {method}{note} | {np.mean([s['psnr'] for s in scored]):.2f} | "
            f"{np.mean([s['ssim'] for s in scored]):.3f} | {np.mean([s['seconds'] for s in scored]):.2f} | "
            f"{worse} | {len(scored)} |"
        )
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK_PICTURES)}")
    parser.add_argument("--json", type=Path, help="write every case's numbers here")
    args = parser.parse_args(argv)
    compute = resolve_device("cpu")
    rng = np.random.default_rng(SEED)
    rows = []
    for name in QUICK_PICTURES if args.quick else PICTURES:
        scene = picture(name)
        for psf_name, make_psf in PSFS.items():
            psf = make_psf()
            for setting in SETTINGS:
                sharp, clean = blur(scene, psf, setting)
                for noise in NOISES:
                    blurred = clean + noise * rng.standard_normal(clean.shape)
                    results = run_case(blurred, psf, setting, compute, SEED)
                    methods = {}
                    for method, (image, seconds, how) in results.items():
                        psnr, ssim = scores(sharp, image) if image is not None else (None, None)
                        methods[method] = {"psnr": psnr, "ssim": ssim, "seconds": seconds, "how": how}
                    sigma = estimate_noise(blurred[None], psf)
                    rows.append({"picture": name, "shape": list(sharp.shape), "psf": psf_name, "setting": setting,
                                 "noise": noise, "estimated_noise": sigma, "methods": methods})
                    default = methods["ours: default"]
                    best = max((v["psnr"], m) for m, v in methods.items() if m.startswith("skimage"))
                    print(f"{name} {sharp.shape} {psf_name} {setting} {noise}: blurred "
                          f"{methods['blurred (input)']['psnr']:.2f}, default {default['psnr']:.2f} "
                          f"[{default['how'].split(' (')[0]}], best of skimage {best[0]:.2f} [{best[1]}]", flush=True)
    print()
    for setting in SETTINGS:
        print("\n".join(summarize(rows, setting)))
        print()
    for noise in NOISES:
        errors = [abs(r["estimated_noise"] / r["noise"] - 1) for r in rows if r["noise"] == noise]
        print(f"noise {noise}: estimate off by {100 * np.mean(errors):.1f}% on average, {100 * max(errors):.1f}% at most")
    chosen = [r["methods"]["ours: default"]["how"].split(" (")[0] for r in rows]
    print(f"default chose exact in {chosen.count('exact')} and tikhonov in {chosen.count('tikhonov')} of {len(rows)} cases")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "cases": rows}, indent=1))


if __name__ == "__main__":
    main()
