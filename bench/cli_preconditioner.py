"""Tikhonov CG with and without the causal preconditioner: iterations, PSNR, CPU seconds.

The measurement behind ``apply --precondition auto`` (the default). Run:
``python bench/cli_preconditioner.py`` (about a minute on 2 CPU cores).
The setup is the demo's: camera 256x256, its causal motion blur, Gaussian noise,
lambda chosen from the data; PSNR on the interior as in the demo.
"""

import time

import numpy as np
from scipy.signal import convolve2d

from invconv_cupy.cli.demo import MOTION, _camera, _scores
from invconv_cupy.cli.device import resolve_device
from invconv_cupy.cli.methods import choose_lambda, condition_estimates, deblur_tikhonov, pick_preconditioner
from invconv_cupy.cli.psf import exact_kernel, motion_psf


def main():
    compute = resolve_device("cpu")
    sharp = _camera(2)
    psf = motion_psf(**MOTION)
    kernel = exact_kernel(psf)
    print(f"{'noise':>6} {'lambda':>9} {'preconditioner':>14} {'iterations':>10} {'PSNR dB':>8} {'CPU s':>7} "
          f"{'cond. estimate':>14} {'auto picks':>10}")
    for noise in (0.001, 0.002, 0.005, 0.01):
        blurred = convolve2d(sharp, psf, mode="same") + noise * np.random.default_rng(0).standard_normal(sharp.shape)
        lam = choose_lambda(blurred[None])
        estimates = condition_estimates(psf, sharp.shape, lam)
        auto = "causal" if pick_preconditioner(psf, kernel, sharp.shape, lam) else "none"
        for pre, estimate in zip((None, kernel), estimates):
            start = time.process_time()
            result = deblur_tikhonov(blurred[None], psf, lam, compute, preconditioner=pre)
            seconds = time.process_time() - start
            psnr, _ = _scores(sharp, result.image[0])
            print(f"{noise:6.3f} {lam:9.2e} {'causal' if pre else 'none':>14} {result.iterations:>10} {psnr:8.2f} "
                  f"{seconds:7.2f} {estimate:14.1f} {auto:>10}")


if __name__ == "__main__":
    main()
