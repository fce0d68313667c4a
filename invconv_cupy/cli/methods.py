"""The deblurring methods: the exact causal inverse and Tikhonov-regularized least squares.

Images arrive as ``(B, H, W)`` float64 arrays (the colour channels of one image
are the batch ``B``, deblurred together); results come back the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import invconv_cupy as ic

from .device import Compute
from .psf import CausalKernel, split_psf

#: Tikhonov's default data-driven regularization: lambda = LAMBDA_SCALE * sigma^2 / g2,
#: with sigma the estimated noise level and g2 the blurred image's mean squared gradient
#: (less the part the noise contributes). 0.3 gave the best PSNR among 0.1, 0.3, 1 and 3
#: on the demo's picture and blur at noise 0.001, 0.003 and 0.01; ``--lam`` overrides.
LAMBDA_SCALE = 0.3
#: The smallest lambda the data-driven choice returns (for noiseless inputs).
LAMBDA_FLOOR = 1e-8


def deblur_exact(blurred: np.ndarray, kernel: CausalKernel, compute: Compute) -> np.ndarray:
    """The exact inverse of the causal blur: one ``invconv_cupy.solve``.

    Parameters
    ----------
    blurred : numpy.ndarray, shape (B, H, W)
    kernel : CausalKernel
        The blur as a causal convolution (see :func:`psf.exact_kernel`).
    compute : Compute

    Returns
    -------
    numpy.ndarray, shape (B, H, W)
    """
    y = compute.to_device(blurred[:, None])
    x = ic.solve(y, kernel.as_weight(compute.xp), kernel.orientation)
    return compute.to_host(x[:, 0])


class BlurOperator:
    """Blurring with any PSF, and its transpose, as sums of causal convolutions.

    The PSF is split into its quadrants (:func:`psf.split_psf`); each part is an
    ``invconv_cupy.conv``, and its transpose is ``conv`` with the flipped weight
    in the opposite orientation (what ``conv_vjp`` returns as ``grad_x``,
    without computing the weight gradient).

    Parameters
    ----------
    psf : numpy.ndarray
        A validated PSF.
    compute : Compute
    """

    def __init__(self, psf: np.ndarray, compute: Compute):
        xp = compute.xp
        self._forward = [(k.as_weight(xp), k.orientation) for k in split_psf(psf)]
        self._adjoint = [(k.transposed().as_weight(xp), k.transposed().orientation) for k in split_psf(psf)]

    @staticmethod
    def _apply(x, parts):
        out = ic.conv(x, *parts[0])
        for weight, orientation in parts[1:]:
            out += ic.conv(x, weight, orientation)
        return out

    def forward(self, x):
        """``psf * x`` for ``x`` of shape ``(B, 1, H, W)``."""
        return self._apply(x, self._forward)

    def adjoint(self, y):
        """The transpose of :meth:`forward` applied to ``y``."""
        return self._apply(y, self._adjoint)


def _gradient_normal(xp, x):
    """``D^T D x`` for forward differences ``D`` (no wrap-around): the Neumann Laplacian, negated."""
    out = xp.zeros_like(x)
    dh = x[..., :, 1:] - x[..., :, :-1]
    out[..., :, 1:] += dh
    out[..., :, :-1] -= dh
    dv = x[..., 1:, :] - x[..., :-1, :]
    out[..., 1:, :] += dv
    out[..., :-1, :] -= dv
    return out


def estimate_noise(blurred: np.ndarray) -> float:
    """Noise standard deviation: Donoho's median absolute deviation of the finest diagonal Haar wavelet coefficients.

    ``(x[2i, 2j] - x[2i, 2j+1] - x[2i+1, 2j] + x[2i+1, 2j+1]) / 2`` has the noise's
    standard deviation for white noise and is near zero on smooth (blurred)
    image content; ``median(|.|) / 0.6745`` is robust to the edges that remain.
    Pooled over the batch.
    """
    h, w = blurred.shape[-2] // 2 * 2, blurred.shape[-1] // 2 * 2
    x = blurred[..., :h, :w]
    diagonal = (x[..., 0::2, 0::2] - x[..., 0::2, 1::2] - x[..., 1::2, 0::2] + x[..., 1::2, 1::2]) / 2
    return float(np.median(np.abs(diagonal)) / 0.6745) if diagonal.size else 0.0


def choose_lambda(blurred: np.ndarray) -> float:
    """The data-driven Tikhonov weight ``LAMBDA_SCALE * sigma^2 / g2``.

    ``sigma`` is the estimated noise level and ``g2`` the mean squared forward
    difference of the blurred image less the ``4 sigma^2`` white noise adds to
    it: for images whose power spectrum falls like ``1/|frequency|^2`` this is
    the ratio that makes the gradient penalty a Wiener filter.
    """
    sigma = estimate_noise(blurred)
    squares = sum(float(np.mean(d**2)) for d in (np.diff(blurred, axis=-1), np.diff(blurred, axis=-2)) if d.size)
    g2 = max(squares - 4 * sigma**2, squares * 1e-3, np.finfo(float).tiny)
    return max(LAMBDA_SCALE * sigma**2 / g2, LAMBDA_FLOOR)


def condition_estimates(psf: np.ndarray, shape: tuple[int, int], lam: float) -> tuple[float, float]:
    """Condition numbers of Tikhonov's normal equations, plain and causally preconditioned.

    Periodic (Fourier) approximation on a grid of ``shape``: with ``|K|^2`` and
    ``|D|^2`` the symbols of the blur and of the gradient penalty, the normal
    matrix has eigenvalues ``|K|^2 + lam |D|^2`` and, preconditioned by
    ``(K^T K)^-1``, ``1 + lam |D|^2 / |K|^2``. CG needs about the square root
    of the condition number in iterations.

    Returns
    -------
    plain, preconditioned : float
    """
    grid = (max(shape[0], psf.shape[0]), max(shape[1], psf.shape[1]))
    blur = np.abs(np.fft.fft2(psf, grid)) ** 2
    fy, fx = (2 - 2 * np.cos(2 * np.pi * np.fft.fftfreq(n)) for n in grid)
    normal = blur + lam * (fy[:, None] + fx[None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        plain = float(normal.max() / normal.min())
        ratio = normal / blur
        preconditioned = float(ratio.max() / ratio.min())
    return plain, (preconditioned if np.isfinite(preconditioned) else np.inf)


def pick_preconditioner(
    psf: np.ndarray, kernel: CausalKernel | None, shape: tuple[int, int], lam: float
) -> CausalKernel | None:
    """``kernel`` when preconditioning by it is estimated to need fewer CG iterations, else None.

    Measured on the demo (``bench/cli_preconditioner.py``): the causal
    preconditioner cuts the iterations at small ``lam`` (low noise) and
    multiplies them at large ``lam``; :func:`condition_estimates` predicts the
    crossover.
    """
    if kernel is None:
        return None
    plain, preconditioned = condition_estimates(psf, shape, lam)
    return kernel if preconditioned < plain else None


@dataclass(frozen=True)
class TikhonovResult:
    """What :func:`deblur_tikhonov` did.

    Attributes
    ----------
    image : numpy.ndarray, shape (B, H, W)
    lam : float
        The regularization weight used.
    iterations : int
        Conjugate-gradient iterations.
    converged : bool
        Whether CG reached its tolerance within ``maxiter``.
    """

    image: np.ndarray
    lam: float
    iterations: int
    converged: bool


def deblur_tikhonov(
    blurred: np.ndarray,
    psf: np.ndarray,
    lam: float,
    compute: Compute,
    *,
    preconditioner: CausalKernel | None = None,
    rtol: float = 1e-4,
    maxiter: int = 300,
) -> TikhonovResult:
    """Minimize ``||psf * x - y||^2 + lam ||grad x||^2`` by conjugate gradients.

    Solves the normal equations ``(K^T K + lam D^T D) x = K^T y`` with SciPy's
    (or cupyx's) ``cg`` on a ``LinearOperator`` made of :class:`BlurOperator`.

    Parameters
    ----------
    blurred : numpy.ndarray, shape (B, H, W)
    psf : numpy.ndarray
        Any validated PSF.
    lam : float
        The weight of the gradient penalty, >= 0.
    compute : Compute
    preconditioner : CausalKernel or None
        The PSF as a causal kernel with a stable inverse: then CG is
        preconditioned by ``(K^T K)^-1 = K^-1 K^-T``, two causal solves.
    rtol : float
        CG's relative residual tolerance.
    maxiter : int
        CG's iteration limit.

    Returns
    -------
    TikhonovResult
    """
    xp = compute.xp
    shape = (blurred.shape[0], 1) + blurred.shape[1:]
    n = math.prod(shape)
    blur = BlurOperator(psf, compute)
    y = compute.to_device(blurred).reshape(shape)

    def normal(v):
        x = v.reshape(shape)
        return (blur.adjoint(blur.forward(x)) + lam * _gradient_normal(xp, x)).ravel()

    operator = compute.linalg.LinearOperator((n, n), matvec=normal, dtype=xp.float64)
    precondition = None
    if preconditioner is not None:
        w, o = preconditioner.as_weight(xp), preconditioner.orientation
        wt, ot = preconditioner.transposed().as_weight(xp), preconditioner.transposed().orientation

        def inverse_normal(v):
            return ic.solve(ic.solve(v.reshape(shape), wt, ot), w, o).ravel()

        precondition = compute.linalg.LinearOperator((n, n), matvec=inverse_normal, dtype=xp.float64)
    iterations = 0

    def count(_):
        nonlocal iterations
        iterations += 1

    rhs = blur.adjoint(y).ravel()
    x, info = compute.linalg.cg(
        operator, rhs, x0=y.ravel(), rtol=rtol, maxiter=maxiter, M=precondition, callback=count
    )
    return TikhonovResult(compute.to_host(x.reshape(blurred.shape)), lam, iterations, info == 0)
