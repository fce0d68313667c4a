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
other model, to show what the mismatch costs. scikit-image's methods, each given
its best chance:

- Wiener: its balance "must be hand tuned" (its docs); it gets the best of
  ``WIENER_BALANCES`` in each case, judged against the sharp picture (an oracle
  our methods do not get: they choose everything from the blurred data), and,
  for reference, the fixed 0.1 of its docstring's example;
- unsupervised Wiener: tunes itself;
- Richardson-Lucy: on the input clipped to [0, 1] (it needs a non-negative
  input), with the best of ``RL_ITERATIONS`` iterations in each case, judged the
  same way.

Two scorings, results clipped to [0, 1]: the whole frame, and its interior
(``BORDER`` pixels left out on every side, as the demo does, where
scikit-image's periodic (Wiener) and zero (Richardson-Lucy) boundaries ring).
Each scoring picks the tuned methods' parameter for itself. PSNR and SSIM
(``data_range=1``), and seconds (wall clock; for a tuned method, one run with
the parameter the interior scoring picked).

Run (6 minutes on a 2-core VM shared with other work; ``--quick`` runs two pictures):

    python bench/deblur_benchmark.py [--quick] [--json bench/results/deblur-latest.json]

It prints one markdown table per setting and scoring (mean over the cases; ``n/a``
where a method does not apply, e.g. exact for a non-causal PSF), how often each
method came out worse than the blurred input, whether the goal (ours: default
best in mean PSNR and never worse than the input) is met or by how much it is
missed, and how far the noise estimate was off.
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
#: Pixels left out on every side for the interior scoring (as the demo does; more than any PSF's half-size here).
BORDER = 16
SIDE = 128
SEED = 0
RL_ITERATIONS = (10, 30, 100, 300)
WIENER_BALANCES = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
WIENER_EXAMPLE_BALANCE = 0.1
SCORINGS = ("whole", "interior")
METHODS = (
    "blurred (input)",
    "ours: default",
    "ours: exact",
    "ours: tikhonov",
    "ours: default, the other boundary model",
    "skimage: wiener (best balance)",
    "skimage: wiener (balance 0.1)",
    "skimage: unsupervised wiener",
    "skimage: richardson-lucy (best iterations)",
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


def scores(sharp: np.ndarray, image: np.ndarray, scoring: str) -> tuple[float, float]:
    """(PSNR, SSIM) of ``image`` clipped to [0, 1] against ``sharp``, on the whole frame or its interior."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    clipped = np.clip(image, 0.0, 1.0)
    if scoring == "interior":
        inside = (slice(BORDER, -BORDER), slice(BORDER, -BORDER))
        sharp, clipped = sharp[inside], clipped[inside]
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
    """Every method on one blurred image: {method: [(image or None, seconds, note), ...]}.

    A tuned method has one entry per parameter (the scoring picks among them), the others one.
    """
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

    def ours_entry(method, boundary):
        (image, how), seconds = timed(ours, method, boundary)
        return [(image[0], seconds, how)]

    matching, other = BOUNDARY[setting]
    out = {"blurred (input)": [(blurred, 0.0, "")]}
    out["ours: default"] = ours_entry(None, matching)
    out["ours: exact"] = ours_entry("exact", matching) if exact_ok else [(None, 0.0, "n/a")]
    out["ours: tikhonov"] = ours_entry("tikhonov", matching)
    out["ours: default, the other boundary model"] = ours_entry(None, other)
    out["skimage: wiener (best balance)"] = [
        (*timed(wiener, blurred, psf, balance), f"balance {balance:g}") for balance in WIENER_BALANCES
    ]
    out["skimage: wiener (balance 0.1)"] = [(*timed(wiener, blurred, psf, WIENER_EXAMPLE_BALANCE), "")]
    (image, _), seconds = timed(unsupervised_wiener, blurred, psf, rng=rng)
    out["skimage: unsupervised wiener"] = [(image, seconds, "")]
    non_negative = np.clip(blurred, 0.0, 1.0)
    out["skimage: richardson-lucy (best iterations)"] = [
        (*timed(richardson_lucy, non_negative, psf, num_iter=n), f"{n} iterations") for n in RL_ITERATIONS
    ]
    return out


def score_case(sharp: np.ndarray, results: dict) -> dict:
    """{method: {scoring: {psnr, ssim, how}, seconds}}: each scoring's best entry of a tuned method."""
    methods = {}
    for method, entries in results.items():
        if entries[0][0] is None:
            methods[method] = {"seconds": 0.0, "how": entries[0][2],
                               **{scoring: {"psnr": None, "ssim": None} for scoring in SCORINGS}}
            continue
        scored = {}
        for scoring in SCORINGS:
            psnr, ssim, how = max((*scores(sharp, image, scoring), how) for image, _, how in entries)
            scored[scoring] = {"psnr": psnr, "ssim": ssim, "how": how}
        seconds = next(s for _, s, how in entries if how == scored["interior"]["how"])
        methods[method] = {"seconds": seconds, "how": scored["interior"]["how"], **scored}
    return methods


def summarize(rows: list[dict], setting: str, scoring: str) -> list[str]:
    """A markdown table of the means for ``setting`` under ``scoring``, and whether the goal is met."""
    cases = [r for r in rows if r["setting"] == setting]
    lines = [
        f"setting {setting} (ours with the {BOUNDARY[setting][0]} boundary model), {scoring} scoring: {len(cases)} cases",
        "",
        "| method | mean PSNR dB | mean SSIM | mean seconds | worse than input | cases |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    means = {}
    for method in METHODS:
        scored = [r["methods"][method] for r in cases if r["methods"][method][scoring]["psnr"] is not None]
        if not scored:
            continue
        worse = sum(
            1 for r in cases if r["methods"][method][scoring]["psnr"] is not None
            and r["methods"][method][scoring]["psnr"] < r["methods"]["blurred (input)"][scoring]["psnr"]
        )
        note = "" if len(scored) == len(cases) else " (causal PSFs only)"
        means[method] = (np.mean([s[scoring]["psnr"] for s in scored]), worse, len(scored) == len(cases))
        lines.append(
            f"| {method}{note} | {means[method][0]:.2f} | {np.mean([s[scoring]['ssim'] for s in scored]):.3f} | "
            f"{np.mean([s['seconds'] for s in scored]):.2f} | {worse} | {len(scored)} |"
        )
    default, worse, _ = means["ours: default"]
    rival, (best, _, _) = max(((m, v) for m, v in means.items() if m != "ours: default" and v[2]), key=lambda mv: mv[1][0])
    skimage, (best_skimage, _, _) = max(((m, v) for m, v in means.items() if m.startswith("skimage")),
                                        key=lambda mv: mv[1][0])
    verdict = "met" if default >= best and worse == 0 else "not met"
    lines += ["", f"goal {verdict}: ours: default {default:.2f} dB; best other method over all cases: {rival} "
              f"{best:.2f} dB ({default - best:+.2f} dB); best of scikit-image: {skimage} {best_skimage:.2f} dB "
              f"({default - best_skimage:+.2f} dB); worse than the input in {worse} of {len(cases)} cases"]
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
                    methods = score_case(sharp, run_case(blurred, psf, setting, compute, SEED))
                    sigma = estimate_noise(blurred[None], psf)
                    rows.append({"picture": name, "shape": list(sharp.shape), "psf": psf_name, "setting": setting,
                                 "noise": noise, "estimated_noise": sigma, "methods": methods})
                    default = methods["ours: default"]
                    line = f"{name} {sharp.shape} {psf_name} {setting} {noise}: default [{default['how'].split(' (')[0]}]"
                    for scoring in SCORINGS:
                        best = max((v[scoring]["psnr"], m) for m, v in methods.items() if m.startswith("skimage"))
                        line += (f"; {scoring}: blurred {methods['blurred (input)'][scoring]['psnr']:.2f}, default "
                                 f"{default[scoring]['psnr']:.2f}, best of skimage {best[0]:.2f} [{best[1]}]")
                    print(line, flush=True)
    print()
    for setting in SETTINGS:
        for scoring in SCORINGS:
            print("\n".join(summarize(rows, setting, scoring)))
            print()
    for noise in NOISES:
        errors = [abs(r["estimated_noise"] / r["noise"] - 1) for r in rows if r["noise"] == noise]
        print(f"noise {noise}: estimate off by {100 * np.mean(errors):.1f}% on average, {100 * max(errors):.1f}% at most")
    chosen = [r["methods"]["ours: default"]["how"].split(" (")[0] for r in rows]
    print(f"default chose exact in {chosen.count('exact')} and tikhonov in {chosen.count('tikhonov')} of {len(rows)} cases")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "border": BORDER, "cases": rows}, indent=1))


if __name__ == "__main__":
    main()
