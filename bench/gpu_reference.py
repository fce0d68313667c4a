"""Float64 NumPy references for every output the GPU benchmark times.

Our operators come from ``invconv_cupy``'s NumPy path; cuDNN's ``conv2d`` (zero
"same" padding, full weight) and its backward are written here as one matrix
product per tap. Inputs are host arrays of any float dtype; results are float64.
"""

from __future__ import annotations

import numpy as np

import invconv_cupy as ic


def _f64(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def solve(y, w):
    """``T^-1 y`` for the TL weight ``w``."""
    y, w = _f64(y, w)
    return ic.solve(y, w, backend="numpy")


def solve_vjp(grad_x, x, w):
    """``(grad_y, grad_weight)`` of ``solve`` at its output ``x``."""
    grad_x, x, w = _f64(grad_x, x, w)
    return ic.solve_vjp(grad_x, x, w, backend="numpy")


def _taps(w):
    KH, KW = w.shape[2:]
    return [(a, e, a - KH // 2, e - KW // 2) for a in range(KH) for e in range(KW)]


def _shifted(x, di, dj):
    """``x[..., i + di, j + dj]`` with zeros outside the image."""
    H, W = x.shape[-2:]
    out = np.zeros_like(x)
    out[..., max(0, -di):min(H, H - di), max(0, -dj):min(W, W - dj)] = \
        x[..., max(0, di):min(H, H + di), max(0, dj):min(W, W + dj)]
    return out


def conv2d_same(x, w):
    """``torch.nn.functional.conv2d(x, w, padding="same")`` (cross-correlation, odd kernel)."""
    x, w = _f64(x, w)
    return sum(np.einsum("oc,bchw->bohw", w[:, :, a, e], _shifted(x, di, dj), optimize=True)
               for a, e, di, dj in _taps(w))


def conv2d_same_backward(grad_out, x, w):
    """``(grad_input, grad_weight)`` of :func:`conv2d_same`."""
    grad_out, x, w = _f64(grad_out, x, w)
    grad_input = sum(np.einsum("oc,bohw->bchw", w[:, :, a, e], _shifted(grad_out, -di, -dj), optimize=True)
                     for a, e, di, dj in _taps(w))
    grad_weight = np.zeros_like(w)
    for a, e, di, dj in _taps(w):
        grad_weight[:, :, a, e] = np.einsum("bohw,bchw->oc", grad_out, _shifted(x, di, dj), optimize=True)
    return grad_input, grad_weight


def relative_error(actual, expected) -> float:
    """``max|actual - expected| / max(1, max|expected|)``; inf when shapes differ or anything is not finite."""
    actual, expected = _f64(actual, expected)
    if actual.shape != expected.shape or not np.isfinite(actual).all():
        return float("inf")
    return float(np.abs(actual - expected).max(initial=0.0) / max(1.0, float(np.abs(expected).max(initial=0.0))))
