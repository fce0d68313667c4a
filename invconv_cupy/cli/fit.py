"""Learn a causal blur kernel from a sharp/blurred pair by backpropagating through its inverse.

The kernel ``w`` minimizes ``0.5 * mean((solve(blurred, w) - sharp) ** 2)`` over the
fitted pixels, plus a stability penalty: the extra loss the inverse would have if
the blurred image carried white noise of level ``noise`` (``0.5 noise^2`` times the
inverse's mean per-pixel noise gain), which grows without bound for an inverse
that does not decay, so the fit prefers a stable kernel wherever the data allow.
By default ``noise`` is the rounding noise of an integer blurred image's type
(8-bit: ``1 / (255 sqrt(12))``), which every image of that type carries, and 0
for float images.
The gradients are ``invconv_cupy.solve_vjp`` (the transposed solve plus one
correlation), the optimizer SciPy's L-BFGS-B.

Large images are fitted on random windows (:func:`fit_windows`), all of the same
size, deblurred together as one batch. On each window (and on a whole image) the
loss leaves out a band along the edges the kernel reads from: there the blurred
pixels saw the scene outside the window, which its inverse cannot know.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from tqdm import tqdm

import invconv_cupy as ic

from .device import Compute, resolve_device
from .errors import CliError
from .images import read_image
from .methods import causal_sides
from .noise import quantization_noise
from .output import write_array
from .psf import CausalKernel, NotSafeForExact, psf_of
from .stability import check_stable, response_for

#: Lower bound on the anchor (centre) tap while fitting, so the inverse stays defined.
ANCHOR_FLOOR = 1e-3
#: A trial kernel whose inverse overflows reports this multiple of the last finite
#: loss (and a zero gradient): the line search then interpolates a shorter step. An
#: infinite or huge value would make it collapse to a zero step and stop.
UNSTABLE_PENALTY = 4.0
#: The largest kernel: ``size`` at most this, and at most a quarter of the image's smaller side.
MAX_SIZE = 32
#: Images with more pixels than this are fitted on random windows holding about this many pixels.
FIT_PIXELS = 256 * 256
#: A window's side: this many kernel sizes, at least ``MIN_WINDOW`` pixels.
WINDOW_PER_TAP = 8
MIN_WINDOW = 64


@dataclass(frozen=True)
class FitResult:
    """A fitted kernel and how well its inverse maps ``blurred`` onto ``sharp``.

    Attributes
    ----------
    kernel : CausalKernel
    iterations : int
        L-BFGS-B iterations.
    psnr_before : float
        PSNR (dB, peak = the sharp image's value range) of ``blurred`` against ``sharp`` on the fitted pixels.
    psnr_after : float
        PSNR of ``solve(blurred, kernel)`` against ``sharp`` on the fitted pixels.
    message : str
        The optimizer's termination message.
    """

    kernel: CausalKernel
    iterations: int
    psnr_before: float
    psnr_after: float
    message: str


def _psnr(mse: float, peak: float) -> float:
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def max_size(shape: tuple[int, int]) -> int:
    """The largest kernel size ``fit`` accepts for an image of ``shape``."""
    return max(1, min(MAX_SIZE, min(shape) // 4))


def fit_windows(shape: tuple[int, int], size: int, rng: np.random.Generator) -> list[tuple[slice, slice]]:
    """The parts of an image of ``shape`` to fit a ``size`` kernel on: the whole image, or random equal windows.

    An image of at most :data:`FIT_PIXELS` pixels is used whole; a larger one as
    ``ceil(FIT_PIXELS / side^2)`` windows of ``side = max(MIN_WINDOW, WINDOW_PER_TAP * size)``
    pixels (no larger than the image), at random positions.
    """
    h, w = shape
    if h * w <= FIT_PIXELS:
        return [(slice(0, h), slice(0, w))]
    side_h = min(h, max(MIN_WINDOW, WINDOW_PER_TAP * size))
    side_w = min(w, max(MIN_WINDOW, WINDOW_PER_TAP * size))
    count = math.ceil(FIT_PIXELS / (side_h * side_w))
    tops = rng.integers(0, h - side_h + 1, count)
    lefts = rng.integers(0, w - side_w + 1, count)
    return [(slice(t, t + side_h), slice(e, e + side_w)) for t, e in zip(tops, lefts)]


def _fitted_mask(shape: tuple[int, int], size: int, orientation: str) -> np.ndarray:
    """1 on the pixels the loss counts: all but a ``2 * size`` band on the sides ``orientation`` reads from.

    (Nothing is left out of an image too small to keep a quarter of its pixels.)
    """
    (top, bottom), (left, right) = causal_sides(orientation, 2 * size)
    h, w = shape
    mask = np.zeros(shape)
    if (h - top - bottom) * (w - left - right) < h * w / 4:
        mask[...] = 1.0
    else:
        mask[top : h - bottom, left : w - right] = 1.0
    return mask


def _gain_weights(shape: tuple[int, int], grid: tuple[int, int], orientation: str) -> np.ndarray:
    """Weights that turn the squared impulse response into the mean per-pixel noise gain on an image of ``shape``.

    The response (impulse at ``orientation``'s corner of a ``grid`` no larger than
    ``shape``) at offset ``(di, dj)`` reaches ``(h - di) * (w - dj)`` of the ``h * w`` pixels.
    """
    h, w = shape
    rows = h - np.arange(grid[0])
    cols = w - np.arange(grid[1])
    weights = np.outer(rows, cols) / (h * w)
    return weights[:: -1 if orientation[0] == "B" else 1, :: -1 if orientation[1] == "R" else 1]


def fit_kernel(
    sharp: np.ndarray,
    blurred: np.ndarray,
    size: int,
    orientation: str,
    compute: Compute,
    *,
    maxiter: int = 500,
    noise: float = 0.0,
    windows: list[tuple[slice, slice]] | None = None,
) -> FitResult:
    """Fit a ``size x size`` causal kernel in one orientation.

    Parameters
    ----------
    sharp, blurred : numpy.ndarray, shape (B, H, W)
        The pair, the same shape (the batch shares one kernel).
    size : int
        Kernel height and width (taps from the centre outwards, centre included).
    orientation : {"TL", "TR", "BL", "BR"}
    compute : Compute
    maxiter : int
        L-BFGS-B's iteration limit.
    noise : float
        The noise level of the stability penalty (0: none).
    windows : list of (slice, slice) or None
        The parts of the images to fit on, all of one size (default: the whole images).

    Returns
    -------
    FitResult
    """
    xp = compute.xp
    windows = windows or [(slice(None), slice(None))]
    x_true = compute.to_device(np.concatenate([sharp[(Ellipsis, *w)] for w in windows])[:, None])
    y = compute.to_device(np.concatenate([blurred[(Ellipsis, *w)] for w in windows])[:, None])
    window_shape = x_true.shape[-2:]
    mask = compute.to_device(_fitted_mask(window_shape, size, orientation))
    count = float(mask.sum()) * x_true.shape[0]
    # The penalty's response is computed near the impulse only: enough to see an inverse that does not decay.
    grid = tuple(min(n, max(MIN_WINDOW, WINDOW_PER_TAP * size)) for n in window_shape)
    gain_weights = compute.to_device(_gain_weights(window_shape, grid, orientation))
    impulse = xp.zeros((1, 1) + grid)
    corner = tuple(-1 if flip else 0 for flip in (orientation[0] == "B", orientation[1] == "R"))
    impulse[(0, 0) + corner] = 1.0
    anchor = ic.anchor_index(orientation, size)
    anchor_flat = anchor[0] * size + anchor[1]
    last_finite = math.inf

    def loss_and_grad(theta):
        nonlocal last_finite
        w = xp.asarray(theta.reshape(1, 1, size, size))
        with np.errstate(over="ignore", invalid="ignore"):
            x = ic.solve(y, w, orientation)
            residual = (x - x_true) * mask
            loss = float(0.5 * xp.sum(residual * residual)) / count
            response = ic.solve(impulse, w, orientation) if noise else None
            if noise:
                loss += 0.5 * noise**2 * float(xp.sum(gain_weights * response * response))
        if not math.isfinite(loss):
            return UNSTABLE_PENALTY * last_finite, np.zeros_like(theta)
        last_finite = loss
        _, grad_w = ic.solve_vjp(residual / count, x, w, orientation)
        if noise:
            _, grad_reg = ic.solve_vjp(noise**2 * gain_weights * response, response, w, orientation)
            grad_w = grad_w + grad_reg
        return loss, compute.to_host(grad_w).ravel()

    theta0 = np.zeros(size * size)
    theta0[anchor_flat] = 1.0
    bounds = [(None, None)] * (size * size)
    bounds[anchor_flat] = (ANCHOR_FLOOR, None)
    # tqdm(disable=None) shows the bar only on a terminal.
    with tqdm(total=maxiter, desc=f"fit {orientation}", unit="it", disable=None, leave=False) as progress:

        def report(intermediate_result):
            progress.update()
            progress.set_postfix(loss=f"{intermediate_result.fun:.4g}")

        result = minimize(
            loss_and_grad,
            theta0,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            callback=report,
            options={"maxiter": maxiter, "ftol": 1e-15, "gtol": 1e-12},
        )
    kernel = CausalKernel(result.x.reshape(size, size), orientation)
    w = xp.asarray(kernel.as_weight(xp))
    with np.errstate(over="ignore", invalid="ignore"):
        after = float(xp.sum(((ic.solve(y, w, orientation) - x_true) * mask) ** 2)) / count
    before = float(xp.sum(((y - x_true) * mask) ** 2)) / count
    peak = float(sharp.max() - sharp.min()) or 1.0
    return FitResult(kernel, int(result.nit), _psnr(before, peak), _psnr(after, peak), str(result.message))


def run(args) -> None:
    """The ``fit`` command: validate, fit (every orientation for ``auto``), write the PSF, judge its stability."""
    output = Path(args.output)
    if output.suffix.lower() != ".npy":
        raise CliError(f"fit writes a .npy file, got output {output}")
    if output.is_dir():
        raise CliError(f"output {output} is a folder")
    if output.exists() and not args.force:
        raise CliError(f"output {output} exists; use --force to overwrite it")
    if args.size < 1:
        raise CliError(f"--size must be at least 1, got {args.size}")
    if args.maxiter < 1:
        raise CliError(f"--maxiter must be at least 1, got {args.maxiter}")
    if args.noise is not None and not (math.isfinite(args.noise) and args.noise >= 0):
        raise CliError(f"--noise must be a finite number >= 0, got {args.noise}")
    sharp, blurred = read_image(args.sharp), read_image(args.blurred)
    if sharp.data.shape != blurred.data.shape:
        raise CliError(
            f"sharp {sharp.path} and blurred {blurred.path} must have the same shape, "
            f"got {sharp.data.shape[1:]} x {sharp.channels} and {blurred.data.shape[1:]} x {blurred.channels} channels"
        )
    shape = sharp.data.shape[1:]
    if args.size > max_size(shape):
        raise CliError(
            f"--size {args.size} is too large for a {shape[0]} x {shape[1]} image: at most {max_size(shape)} "
            f"(a quarter of its smaller side, and {MAX_SIZE} at most)"
        )
    compute = resolve_device(args.device)
    if args.noise is not None:
        noise = args.noise
    else:  # integer images carry rounding noise; float ones (synthetic data) none worth a penalty
        noise = quantization_noise(blurred.dtype) if blurred.dtype.kind in "ui" else 0.0
    windows = fit_windows(shape, args.size, np.random.default_rng(args.seed))
    orientations = ic.ORIENTATIONS if args.orientation == "auto" else (args.orientation,)
    fits = [
        fit_kernel(sharp.data, blurred.data, args.size, o, compute, maxiter=args.maxiter, noise=noise, windows=windows)
        for o in orientations
    ]
    best = max(fits, key=lambda f: f.psnr_after)
    write_array(output, psf_of(best.kernel))
    where = "" if len(windows) == 1 else f" on {len(windows)} random {windows[0][0].stop - windows[0][0].start} px windows"
    print(
        f"fit: orientation {best.kernel.orientation}, {best.iterations} L-BFGS-B iterations ({best.message}){where}; "
        f"PSNR of the exact inverse against the sharp image {best.psnr_after:.2f} dB "
        f"(blurred: {best.psnr_before:.2f} dB); wrote {output}"
    )
    try:
        check_stable(response_for(best.kernel, shape), shape)
    except NotSafeForExact as exc:
        print(
            f"fit: the fitted kernel is not stable for exact ({exc.reason}); deblur with: "
            f"invconv-deblur apply {blurred.path} --psf {output} --method tikhonov -o restored{blurred.path.suffix}"
        )
        return
    print(
        f"fit: the fitted kernel's exact inverse is stable on this image; deblur with: "
        f"invconv-deblur apply {blurred.path} --psf {output} -o restored{blurred.path.suffix}"
    )
