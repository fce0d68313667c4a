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

The fit runs on windows (:func:`fit_windows`): the image less a margin of
``size - 1`` pixels on every side, or, for a large image, random equal windows,
deblurred together as one batch. The blurred pixels along a window's edges saw
the picture beyond it; that light is known (the sharp picture is given), so it is
subtracted before the solve: the window's blurred pixels less ``conv`` of the
sharp margin the kernel reads from (a halo of ``size - 1`` pixels, zero inside
the window), with its gradient from ``conv_vjp``. The true kernel then maps the
window exactly onto the sharp one, whatever lies outside the image.
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
        PSNR (dB, peak = the sharp image's value range) of ``blurred`` against ``sharp`` in the windows.
    psnr_after : float
        PSNR of the windows deblurred by ``kernel`` (their halo's light taken out) against ``sharp``.
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
    """The parts of an image of ``shape`` to fit a ``size`` kernel on, each ``size - 1`` pixels from every edge.

    The image less that margin, when it has at most :data:`FIT_PIXELS` pixels;
    else ``ceil(FIT_PIXELS / side^2)`` windows of
    ``side = max(MIN_WINDOW, WINDOW_PER_TAP * size)`` pixels (no larger than that),
    at random positions.
    """
    margin = size - 1
    h, w = shape[0] - 2 * margin, shape[1] - 2 * margin
    if h * w <= FIT_PIXELS:
        return [(slice(margin, margin + h), slice(margin, margin + w))]
    side_h = min(h, max(MIN_WINDOW, WINDOW_PER_TAP * size))
    side_w = min(w, max(MIN_WINDOW, WINDOW_PER_TAP * size))
    count = math.ceil(FIT_PIXELS / (side_h * side_w))
    tops = margin + rng.integers(0, h - side_h + 1, count)
    lefts = margin + rng.integers(0, w - side_w + 1, count)
    return [(slice(t, t + side_h), slice(e, e + side_w)) for t, e in zip(tops, lefts)]


def _with_halo(window: tuple[slice, slice], halo: int, orientation: str) -> tuple[slice, slice]:
    """``window`` extended by ``halo`` pixels on the sides a causal kernel of ``orientation`` reads from."""
    (top, bottom), (left, right) = causal_sides(orientation, halo)
    rows, cols = window
    return slice(rows.start - top, rows.stop + bottom), slice(cols.start - left, cols.stop + right)


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
        The parts of the images to fit on, all of one size and at least ``size - 1``
        pixels from every edge (default: :func:`fit_windows` of the whole image).

    Returns
    -------
    FitResult
    """
    xp = compute.xp
    halo = size - 1
    windows = windows or fit_windows(sharp.shape[-2:], size, np.random.default_rng(0))
    extended = [_with_halo(w, halo, orientation) for w in windows]
    x_true = compute.to_device(np.concatenate([sharp[(Ellipsis, *w)] for w in windows])[:, None])
    y = compute.to_device(np.concatenate([blurred[(Ellipsis, *w)] for w in windows])[:, None])
    window_shape = x_true.shape[-2:]
    # The sharp halo around each window (zero inside it) and where the window lies in the extended frame.
    (top, _), (left, _) = causal_sides(orientation, halo)
    inner = (Ellipsis, slice(top, top + window_shape[0]), slice(left, left + window_shape[1]))
    halo_sharp = np.concatenate([sharp[(Ellipsis, *e)] for e in extended])[:, None].copy()
    halo_sharp[inner] = 0.0
    halo_sharp = compute.to_device(halo_sharp)
    count = float(x_true.size)
    # The penalty's response is computed near the impulse only: enough to see an inverse that does not decay.
    grid = tuple(min(n, max(MIN_WINDOW, WINDOW_PER_TAP * size)) for n in window_shape)
    gain_weights = compute.to_device(_gain_weights(window_shape, grid, orientation))
    impulse = xp.zeros((1, 1) + grid)
    corner = tuple(-1 if flip else 0 for flip in (orientation[0] == "B", orientation[1] == "R"))
    impulse[(0, 0) + corner] = 1.0
    anchor = ic.anchor_index(orientation, size)
    anchor_flat = anchor[0] * size + anchor[1]
    last_finite = math.inf

    def deblurred(w):
        """The window deblurred by ``w``, after the light its halo sent in is taken out."""
        return ic.solve(y - ic.conv(halo_sharp, w, orientation)[inner], w, orientation)

    def loss_and_grad(theta):
        nonlocal last_finite
        w = xp.asarray(theta.reshape(1, 1, size, size))
        with np.errstate(over="ignore", invalid="ignore"):
            x = deblurred(w)
            residual = x - x_true
            loss = float(0.5 * xp.sum(residual * residual)) / count
            response = ic.solve(impulse, w, orientation) if noise else None
            if noise:
                loss += 0.5 * noise**2 * float(xp.sum(gain_weights * response * response))
        if not math.isfinite(loss):
            return UNSTABLE_PENALTY * last_finite, np.zeros_like(theta)
        last_finite = loss
        grad_y, grad_w = ic.solve_vjp(residual / count, x, w, orientation)
        grad_halo = xp.zeros_like(halo_sharp)
        grad_halo[inner] = -grad_y
        grad_w = grad_w + ic.conv_vjp(grad_halo, halo_sharp, w, orientation)[1]
        if noise:
            _, grad_reg = ic.solve_vjp(noise**2 * gain_weights * response, response, w, orientation)
            grad_w = grad_w + grad_reg
        return loss, compute.to_host(grad_w).ravel()

    theta0 = np.zeros(size * size)
    theta0[anchor_flat] = 1.0
    bounds = [(None, None)] * (size * size)
    bounds[anchor_flat] = (ANCHOR_FLOOR, None)
    # L-BFGS-B's stopping rule is relative only above 1: measure the loss in units of the starting one.
    unit = loss_and_grad(theta0)[0] or 1.0

    def scaled(theta):
        loss, grad = loss_and_grad(theta)
        return loss / unit, grad / unit

    # tqdm(disable=None) shows the bar only on a terminal.
    with tqdm(total=maxiter, desc=f"fit {orientation}", unit="it", disable=None, leave=False) as progress:

        def report(intermediate_result):
            progress.update()
            progress.set_postfix(loss=f"{intermediate_result.fun * unit:.4g}")

        result = minimize(
            scaled,
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
        after = float(xp.sum((deblurred(w) - x_true) ** 2)) / count
    before = float(xp.sum((y - x_true) ** 2)) / count
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
