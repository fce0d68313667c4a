"""Learn a causal blur kernel from a sharp/blurred pair by backpropagating through its inverse.

The kernel ``w`` minimizes ``0.5 * mean((solve(blurred, w) - sharp) ** 2)``: the
exact inverse of the learned blur maps the blurred image onto the sharp one as
well as possible. The gradient is ``invconv_cupy.solve_vjp`` (the transposed
solve plus one correlation), the optimizer SciPy's L-BFGS-B.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

import invconv_cupy as ic
from invconv_cupy.orientation import parse_orientation

from .device import Compute, resolve_device
from .errors import CliError
from .images import read_image
from .output import write_array
from .psf import MAX_GROWTH, CausalKernel, inverse_growth, psf_of

#: Lower bound on the anchor (centre) tap while fitting, so the inverse stays defined.
ANCHOR_FLOOR = 1e-3
#: A trial kernel whose inverse overflows reports this multiple of the last finite
#: loss (and a zero gradient): the line search then interpolates a shorter step. An
#: infinite or huge value would make it collapse to a zero step and stop.
UNSTABLE_PENALTY = 4.0


@dataclass(frozen=True)
class FitResult:
    """A fitted kernel and how well its inverse maps ``blurred`` onto ``sharp``.

    Attributes
    ----------
    kernel : CausalKernel
    iterations : int
        L-BFGS-B iterations.
    psnr_before : float
        PSNR (dB, peak = the sharp image's value range) of ``blurred`` against ``sharp``.
    psnr_after : float
        PSNR of ``solve(blurred, kernel)`` against ``sharp``.
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


def fit_kernel(
    sharp: np.ndarray,
    blurred: np.ndarray,
    size: int,
    orientation: str,
    compute: Compute,
    *,
    maxiter: int = 500,
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

    Returns
    -------
    FitResult
    """
    xp = compute.xp
    x_true = compute.to_device(sharp[:, None])
    y = compute.to_device(blurred[:, None])
    count = x_true.size
    anchor = parse_orientation(orientation).anchor(size, size)
    anchor_index = anchor[0] * size + anchor[1]

    last_finite = math.inf

    def loss_and_grad(theta):
        nonlocal last_finite
        w = xp.asarray(theta.reshape(1, 1, size, size))
        with np.errstate(over="ignore", invalid="ignore"):
            x = ic.solve(y, w, orientation)
            residual = x - x_true
            loss = float(0.5 * xp.sum(residual * residual)) / count
        if not math.isfinite(loss):
            return UNSTABLE_PENALTY * last_finite, np.zeros_like(theta)
        last_finite = loss
        _, grad_w = ic.solve_vjp(residual, x, w, orientation)
        return loss, compute.to_host(grad_w).ravel() / count

    theta0 = np.zeros(size * size)
    theta0[anchor_index] = 1.0
    bounds = [(None, None)] * (size * size)
    bounds[anchor_index] = (ANCHOR_FLOOR, None)
    result = minimize(
        loss_and_grad,
        theta0,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": maxiter, "ftol": 1e-15, "gtol": 1e-12},
    )
    peak = float(sharp.max() - sharp.min()) or 1.0
    before = float(np.mean((blurred - sharp) ** 2))
    return FitResult(
        CausalKernel(result.x.reshape(size, size), orientation),
        int(result.nit),
        _psnr(before, peak),
        _psnr(2 * float(result.fun), peak),
        str(result.message),
    )


def run(args) -> None:
    """The ``fit`` command: validate, fit (every orientation for ``auto``), write the PSF."""
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
    sharp, blurred = read_image(args.sharp), read_image(args.blurred)
    if sharp.data.shape != blurred.data.shape:
        raise CliError(
            f"sharp {sharp.path} and blurred {blurred.path} must have the same shape, "
            f"got {sharp.data.shape[1:]} x {sharp.channels} and {blurred.data.shape[1:]} x {blurred.channels} channels"
        )
    if args.size > min(sharp.data.shape[1:]):
        raise CliError(f"--size {args.size} is larger than the image ({sharp.data.shape[1]} x {sharp.data.shape[2]})")
    compute = resolve_device(args.device)
    orientations = ic.ORIENTATIONS if args.orientation == "auto" else (args.orientation,)
    fits = [fit_kernel(sharp.data, blurred.data, args.size, o, compute, maxiter=args.maxiter) for o in orientations]
    best = max(fits, key=lambda f: f.psnr_after)
    write_array(output, psf_of(best.kernel))
    growth = inverse_growth(best.kernel)
    stability = (
        "stable" if growth <= MAX_GROWTH else f"unstable (growth {growth:.3g}): apply --method exact will refuse it"
    )
    print(
        f"fit: orientation {best.kernel.orientation}, {best.iterations} L-BFGS-B iterations ({best.message}); "
        f"PSNR of the exact inverse against the sharp image {best.psnr_after:.2f} dB "
        f"(blurred: {best.psnr_before:.2f} dB); inverse {stability}; wrote {output}"
    )
