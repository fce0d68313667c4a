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

from .blur import ObservedBlur, fast_grid, fft_module
from .device import Compute
from .noise import blur_symbol, gradient_symbol
from .psf import CausalKernel, crop_to_support

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


def _add_gradient_normal(xp, x, lam: float, out) -> None:
    """Add ``lam D^T D x`` to ``out``, ``D`` the forward differences (no wrap-around): the Neumann Laplacian, negated."""
    for axis in (-1, -2):
        d = xp.diff(x, axis=axis)
        d *= lam
        tail = [slice(None)] * x.ndim
        head = [slice(None)] * x.ndim
        tail[axis], head[axis] = slice(1, None), slice(None, -1)
        out[tuple(tail)] += d
        out[tuple(head)] -= d


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
    """CG's preconditioner ``M^-1`` as a ``LinearOperator`` on arrays of ``shape`` (B, H, W), or None.

    - ``"fourier"``: the inverse of the normal matrix's periodic (circulant)
      approximation, ``F^-1 diag(1 / (|K|^2 + lam |D|^2)) F``: two real FFTs, any PSF.
      They run on the grid zero-padded to sizes FFTs are fast at (``C F^-1 D F C^T``
      with ``C`` the crop stays symmetric positive definite): an image side with a
      large prime factor (2008 = 8 x 251) made them 3.5 times slower.
    - ``"causal"``: ``(K^T K)^-1 = K^-1 K^-T``, two causal solves with ``kernel``
      (exact for the zero boundary and ``lam = 0``).
    """
    xp, n = compute.xp, math.prod(shape)
    if kind == "none":
        return None
    if kind == "causal":
        wf, of = kernel.as_weight(xp), kernel.orientation
        wt, ot = kernel.transposed().as_weight(xp), kernel.transposed().orientation
        channels = (shape[0], 1) + tuple(shape[1:])

        def inverse_normal(v):
            return ic.solve(ic.solve(v.reshape(channels), wt, ot), wf, of).ravel()

    else:
        fft = fft_module(compute)
        grid = fast_grid(shape[-2:])
        frame = (Ellipsis, slice(0, shape[-2]), slice(0, shape[-1]))
        symbol = blur_symbol(psf, grid)
        symbol += lam * gradient_symbol(grid)
        # A PSF whose transfer function has zeros, with lam = 0: leave those frequencies alone.
        symbol = compute.to_device(np.maximum(symbol, symbol.max() * 1e-12))

        def inverse_normal(v):
            spectrum = fft.rfft2(v.reshape(shape), s=grid)
            spectrum /= symbol
            return fft.irfft2(spectrum, s=grid, overwrite_x=True)[frame].ravel()

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

    Solves the normal equations ``(K^T M^T M K + lam D^T D) x = K^T M^T y`` with SciPy's
    (or cupyx's) ``cg`` on a ``LinearOperator`` made of :class:`blur.ObservedBlur`
    (real FFTs).
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
    shape = (b, h + 2 * mh, w + 2 * mw)
    frame = (slice(mh, mh + h), slice(mw, mw + w))
    n = math.prod(shape)
    blur = ObservedBlur(psf, shape[1:], frame, compute)

    def normal(v):
        x = v.reshape(shape)
        out = blur.normal(x)
        _add_gradient_normal(xp, x, lam, out)
        return out.ravel()

    operator = compute.linalg.LinearOperator((n, n), matvec=normal, dtype=xp.float64)
    preconditioner = _preconditioner(precondition, psf, lam, kernel, shape, compute)
    iterations = 0

    def count(_):
        nonlocal iterations
        iterations += 1

    right = blur.adjoint(compute.to_device(blurred)).ravel()
    start = compute.to_device(np.pad(blurred, ((0, 0), (mh, mh), (mw, mw)), mode="symmetric")).ravel()
    x, info = compute.linalg.cg(
        operator, right, x0=start, rtol=rtol, maxiter=maxiter, M=preconditioner, callback=count
    )
    image = compute.to_host(x.reshape(shape)[(Ellipsis, *frame)])
    return TikhonovResult(image, lam, iterations, info == 0)
