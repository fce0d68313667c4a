"""Tikhonov CG under each preconditioner and boundary model: iterations, PSNR, CPU seconds.

The measurement behind ``apply --precondition`` (default ``fourier``). Run:
``python bench/cli_preconditioner.py`` (a few minutes on 2 CPU cores).
The setup is the demo's: camera 256x256, its causal motion blur, Gaussian noise,
noise level and lambda estimated from the data; PSNR on the interior as in the demo.
"""

import time

import numpy as np
from scipy.signal import convolve2d

from invconv_cupy.cli.demo import MOTION, _camera, _scores
from invconv_cupy.cli.device import resolve_device
from invconv_cupy.cli.methods import choose_lambda, deblur_tikhonov
from invconv_cupy.cli.noise import estimate_noise
from invconv_cupy.cli.psf import exact_kernel, motion_psf

CASES = (("zero", "fourier"), ("zero", "causal"), ("zero", "none"), ("unknown", "fourier"), ("unknown", "none"))


def main():
    compute = resolve_device("cpu")
    sharp = _camera(2)
    psf = motion_psf(**MOTION)
    kernel = exact_kernel(psf)
    print(f"{'noise':>6} {'lambda':>9} {'boundary':>8} {'preconditioner':>14} {'iterations':>10} {'PSNR dB':>8} "
          f"{'CPU s':>7}")
    for noise in (0.001, 0.002, 0.005, 0.01):
        blurred = convolve2d(sharp, psf, mode="same") + noise * np.random.default_rng(0).standard_normal(sharp.shape)
        lam = choose_lambda(blurred[None], estimate_noise(blurred[None], psf))
        for boundary, precondition in CASES:
            start = time.process_time()
            result = deblur_tikhonov(
                blurred[None], psf, lam, compute, boundary=boundary, precondition=precondition, kernel=kernel
            )
            seconds = time.process_time() - start
            psnr, _ = _scores(sharp, result.image[0])
            print(f"{noise:6.3f} {lam:9.2e} {boundary:>8} {precondition:>14} {result.iterations:>10} {psnr:8.2f} "
                  f"{seconds:7.2f}", flush=True)


if __name__ == "__main__":
    main()
