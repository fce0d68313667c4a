"""The deblurring methods: the exact causal inverse and Tikhonov-regularized least squares.

Images arrive as ``(B, H, W)`` float64 arrays (the colour channels of one image
are the batch ``B``, deblurred together); results come back the same way.

Two boundary models (``--boundary``):

- ``"zero"``: the sharp picture is zero outside the frame, as in a blur computed
  with zero padding (``convolve2d(..., mode="same")``: synthetic data).
- ``"unknown"``: the picture goes on outside the frame, as in a photograph: every
  observed pixel saw some of it. Tikhonov solves for the picture on the frame
  extended by the PSF's half-size on every side, with the data term only on the
  observed pixels (the extension is fixed by the smoothness penalty alone). The
  exact inverse cannot leave pixels unknown; it extends the *blurred* image by its
  mirror image on the sides its blur reads from, far enough for the inverse's
  impulse response to have died out (:func:`stability.InverseResponse.settled_distance`),
  so the error of that guess stays outside the frame except for what the mirror
  gets wrong close to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import invconv_cupy as ic

from .device import Compute
from .noise import blur_symbol, gradient_symbol
from .psf import CausalKernel, crop_to_support, split_psf

BOUNDARIES = ("unknown", "zero")

#: Tikhonov's default data-driven regularization: lambda = LAMBDA_SCALE * sigma^2 / g2,
#: with sigma the estimated noise level and g2 the blurred image's mean squared gradient
#: (less the part the noise contributes). With :func:`noise.estimate_noise`, 0.3 gave the
#: best mean PSNR among 0.1, 0.3 and 1 (unknown boundary) over camera, coins and text at
#: 128 px, the three PSFs and noise levels of ``bench/deblur_benchmark.py``, both of its
#: settings (27.47 dB against 27.05 and 26.79); ``--lam`` overrides.
LAMBDA_SCALE = 0.3
#: The smallest lambda the data-driven choice returns (for noiseless inputs).
LAMBDA_FLOOR = 1e-8


def causal_sides(orientation: str, extension: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """``numpy.pad`` widths that add ``extension`` pixels on the sides a causal blur of ``orientation`` reads from."""
    rows = (0, extension) if orientation[0] == "B" else (extension, 0)
    cols = (0, extension) if orientation[1] == "R" else (extension, 0)
    return rows, cols


def deblur_exact(blurred: np.ndarray, kernel: CausalKernel, compute: Compute, extension: int = 0) -> np.ndarray:
    """The exact inverse of the causal blur: one ``invconv_cupy.solve``.

    Parameters
    ----------
    blurred : numpy.ndarray, shape (B, H, W)
    kernel : CausalKernel
        The blur as a causal convolution (see :func:`psf.exact_kernel`).
    compute : Compute
    extension : int
        0: the zero boundary model (the sharp picture is zero beyond the frame).
        Otherwise the unknown boundary model: ``blurred`` is first extended by
        its mirror image (``numpy.pad(mode="symmetric")``) by ``extension`` pixels
        on the sides the blur reads from, and the solve's result is cropped back.

    Returns
    -------
    numpy.ndarray, shape (B, H, W)
    """
    pad = causal_sides(kernel.orientation, extension)
    extended = np.pad(blurred, ((0, 0),) + pad, mode="symmetric") if extension else blurred
    y = compute.to_device(extended[:, None])
    x = compute.to_host(ic.solve(y, kernel.as_weight(compute.xp), kernel.orientation)[:, 0])
    h, w = blurred.shape[-2:]
    return x[:, pad[0][0] : pad[0][0] + h, pad[1][0] : pad[1][0] + w]


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


def choose_lambda(blurred: np.ndarray, sigma: float) -> float:
    """The data-driven Tikhonov weight ``LAMBDA_SCALE * sigma^2 / g2``.

    ``sigma`` is the noise level (:func:`noise.estimate_noise`) and ``g2`` the mean
    squared forward difference of the blurred image less the ``4 sigma^2`` white
    noise adds to it: for images whose power spectrum falls like
    ``1/|frequency|^2`` this is the ratio that makes the gradient penalty a Wiener
    filter.
    """
    squares = sum(float(np.mean(d**2)) for d in (np.diff(blurred, axis=-1), np.diff(blurred, axis=-2)) if d.size)
    g2 = max(squares - 4 * sigma**2, squares * 1e-3, np.finfo(float).tiny)
    return max(LAMBDA_SCALE * sigma**2 / g2, LAMBDA_FLOOR)


PRECONDITIONERS = ("fourier", "causal", "none")


def _preconditioner(kind: str, psf: np.ndarray, lam: float, kernel: CausalKernel | None, shape, compute: Compute):
    """CG's preconditioner ``M^-1`` as a ``LinearOperator`` on arrays of ``shape`` (B, 1, H, W), or None.

    - ``"fourier"``: the inverse of the normal matrix's periodic (circulant)
      approximation, ``F^-1 diag(1 / (|K|^2 + lam |D|^2)) F``: two FFTs, any PSF.
    - ``"causal"``: ``(K^T K)^-1 = K^-1 K^-T``, two causal solves with ``kernel``
      (exact for the zero boundary and ``lam = 0``).
    """
    xp, n = compute.xp, math.prod(shape)
    if kind == "none":
        return None
    if kind == "causal":
        wf, of = kernel.as_weight(xp), kernel.orientation
        wt, ot = kernel.transposed().as_weight(xp), kernel.transposed().orientation

        def inverse_normal(v):
            return ic.solve(ic.solve(v.reshape(shape), wt, ot), wf, of).ravel()

    else:
        symbol = blur_symbol(psf, shape[-2:]) + lam * gradient_symbol(shape[-2:])
        # A PSF whose transfer function has zeros, with lam = 0: leave those frequencies alone.
        symbol = compute.to_device(np.maximum(symbol, symbol.max() * 1e-12))

        def inverse_normal(v):
            return xp.fft.ifft2(xp.fft.fft2(v.reshape(shape)) / symbol).real.ravel()

    return compute.linalg.LinearOperator((n, n), matvec=inverse_normal, dtype=xp.float64)


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
    boundary: str = "zero",
    precondition: str = "fourier",
    kernel: CausalKernel | None = None,
    rtol: float = 1e-5,
    maxiter: int = 300,
) -> TikhonovResult:
    """Minimize ``||M (psf * x) - y||^2 + lam ||grad x||^2`` by conjugate gradients.

    Solves the normal equations ``(K^T M K + lam D^T D) x = K^T M^T y`` with SciPy's
    (or cupyx's) ``cg`` on a ``LinearOperator`` made of :class:`BlurOperator`.
    ``M`` keeps the observed pixels: with ``boundary="zero"`` ``x`` is the frame
    itself and ``M`` the identity; with ``"unknown"`` ``x`` is the frame extended by
    the PSF's half-size on every side, and ``M`` crops the blurred ``x`` to the frame.

    Parameters
    ----------
    blurred : numpy.ndarray, shape (B, H, W)
    psf : numpy.ndarray
        Any validated PSF.
    lam : float
        The weight of the gradient penalty, >= 0.
    compute : Compute
    boundary : {"zero", "unknown"}
        The boundary model (see the module's docstring).
    precondition : {"fourier", "causal", "none"}
        CG's preconditioner: the periodic approximation of the normal matrix
        inverted by FFTs (any PSF, any boundary), ``(K^T K)^-1`` by two causal
        solves (needs ``kernel`` and ``boundary="zero"``), or none.
    kernel : CausalKernel or None
        The PSF as a causal kernel with a stable inverse, for ``precondition="causal"``.
    rtol : float
        CG's tolerance on the residual of the normal equations, relative to their
        right-hand side.
    maxiter : int
        CG's iteration limit.

    Returns
    -------
    TikhonovResult
        The image on the frame, shape (B, H, W).
    """
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {', '.join(BOUNDARIES)}, got {boundary!r}")
    if precondition not in PRECONDITIONERS:
        raise ValueError(f"precondition must be one of {', '.join(PRECONDITIONERS)}, got {precondition!r}")
    if precondition == "causal" and (kernel is None or boundary != "zero"):
        raise ValueError('precondition="causal" needs a kernel and boundary="zero"')
    xp = compute.xp
    psf = crop_to_support(psf)
    (b, h, w) = blurred.shape
    mh, mw = (psf.shape[0] // 2, psf.shape[1] // 2) if boundary == "unknown" else (0, 0)
    shape = (b, 1, h + 2 * mh, w + 2 * mw)
    frame = (Ellipsis, slice(mh, mh + h), slice(mw, mw + w))
    n = math.prod(shape)
    blur = BlurOperator(psf, compute)
    y = compute.to_device(blurred).reshape(b, 1, h, w)

    def observed_adjoint(r):
        if (mh, mw) == (0, 0):
            return blur.adjoint(r)
        padded = xp.zeros(shape)
        padded[frame] = r
        return blur.adjoint(padded)

    def normal(v):
        x = v.reshape(shape)
        return (observed_adjoint(blur.forward(x)[frame]) + lam * _gradient_normal(xp, x)).ravel()

    operator = compute.linalg.LinearOperator((n, n), matvec=normal, dtype=xp.float64)
    preconditioner = _preconditioner(precondition, psf, lam, kernel, shape, compute)
    iterations = 0

    def count(_):
        nonlocal iterations
        iterations += 1

    start = compute.to_device(np.pad(blurred, ((0, 0), (mh, mh), (mw, mw)), mode="symmetric"))
    x, info = compute.linalg.cg(
        operator, observed_adjoint(y).ravel(), x0=start.ravel(), rtol=rtol, maxiter=maxiter, M=preconditioner,
        callback=count,
    )
    image = compute.to_host(x.reshape(shape)[frame][:, 0])
    return TikhonovResult(image, lam, iterations, info == 0)
