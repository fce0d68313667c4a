"""The ops' work on validated tensors: which code computes what.

``solve`` and the transposed solve run on our own code through the functional
API (:mod:`invconv_cupy.api`): the NumPy path for CPU tensors (as zero-copy
NumPy views), the CuPy kernels for CUDA tensors (zero-copy through DLPack, on
torch's current stream with torch's allocator, see :mod:`._cuda`, never
synchronizing with the host).
``conv``, its transpose and the weight gradients run on torch's own
convolutions (:mod:`._conv2d`: oneDNN, cuDNN), so that sampling a flow costs
what a plain convolution costs; :func:`conv_route` sends them to the
functional API's own convolution instead, for comparisons.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

import invconv_cupy as ic

from . import _conv2d
from ._cuda import torch_launch_context

#: where ``conv``, its transpose and the weight gradients run (see :func:`conv_route`)
CONV_ROUTES = ("torch", "invconv_cupy")
_conv_route = "torch"


@contextlib.contextmanager
def conv_route(route: str) -> Iterator[None]:
    """Run ``conv``, its transpose and the weight gradients on ``route`` inside the ``with`` block.

    Parameters
    ----------
    route : {"torch", "invconv_cupy"}
        ``"torch"`` (the default): torch's ``conv2d`` and its weight-gradient
        path (oneDNN on the CPU, cuDNN on CUDA). ``"invconv_cupy"``: the
        functional API's own convolution (the NumPy path, the CuPy kernels),
        for benchmarks and comparisons. ``solve`` always runs on our code.

    The setting is process-wide (not per thread) and restored on exit. Code
    compiled by ``torch.compile`` reads it when it runs.
    """
    global _conv_route
    if route not in CONV_ROUTES:
        raise ValueError(f"route must be one of {', '.join(map(repr, CONV_ROUTES))}, got {route!r}")
    previous, _conv_route = _conv_route, route
    try:
        yield
    finally:
        _conv_route = previous


def on_torch() -> bool:
    """True while the convolutions run on torch's own ``conv2d``."""
    return _conv_route == "torch"


def torch_convolutions(device: torch.device):
    """Autocast off around our own use of torch's convolutions: the ops compute in their inputs' dtype."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _kernel_size(weight: Tensor) -> tuple[int, int]:
    return tuple(weight.shape[-2:])


_padded_buffers = _conv2d.PaddedBuffers()


def _pad(x: Tensor):
    """How the work pads ``x``: into reused buffers on the CPU, ``F.pad`` elsewhere."""
    return _padded_buffers if x.device.type == "cpu" else F.pad


# --- plain torch: what torch.func differentiates and batches through -------------


def conv_vjp_on_torch(grad_y: Tensor, x: Tensor, weight: Tensor, orientation: str, pad=F.pad) -> tuple[Tensor, Tensor]:
    """``(T^T grad_y, weight gradient)`` on torch's convolutions."""
    return (_conv2d.conv_transpose(grad_y, weight, orientation, pad),
            _conv2d.weight_grad(grad_y, x, _kernel_size(weight), orientation, pad))


def weight_grad_of_solve(grad_y: Tensor, x: Tensor, weight: Tensor, orientation: str, pad=F.pad) -> Tensor:
    """solve's weight gradient from the transposed solve's ``grad_y`` and solve's output ``x``."""
    return _conv2d.weight_grad(grad_y, x, _kernel_size(weight), orientation, pad).neg_()


# --- the work, called on plain tensors ---------------------------------------------


# The work runs where autograd records nothing (under no_grad, in a Function's
# forward or backward, below the dispatcher's autograd key): torch's own
# convolutions need no detach; the functional API refuses tensors that require grad.


def _on_our_code(function, *tensors: Tensor, **options):
    """``function`` of the functional API on ``tensors``, its results as tensors.

    CPU tensors go in as zero-copy NumPy views (``Tensor.numpy(force=True)``
    applies a negative or conjugate bit, as the API's DLPack import does) and
    come back through ``torch.from_numpy``: torch's DLPack export and device
    queries cost more than the API's own checks (some 20 us a call, which shows
    at 8 x 8). CUDA tensors
    go through DLPack, on torch's current stream with torch's allocator.
    """
    device = tensors[0].device
    if device.type == "cpu":
        results = function(*(t.numpy(force=True) for t in tensors), **options)
        return torch.from_numpy(results) if not isinstance(results, tuple) else tuple(map(torch.from_numpy, results))
    with torch_launch_context(device):
        return function(*(t.detach() for t in tensors), **options)


def conv(x: Tensor, weight: Tensor, orientation: str) -> Tensor:
    if on_torch():
        with torch_convolutions(x.device):
            return _conv2d.conv(x, weight, orientation, _pad(x))
    return _on_our_code(ic.conv, x, weight, orientation=orientation)


def conv_vjp(grad_y: Tensor, x: Tensor, weight: Tensor, orientation: str) -> tuple[Tensor, Tensor]:
    if on_torch():
        with torch_convolutions(x.device):
            return conv_vjp_on_torch(grad_y, x, weight, orientation, _pad(x))
    return _on_our_code(ic.conv_vjp, grad_y, x, weight, orientation=orientation)


def solve(y: Tensor, weight: Tensor, orientation: str, transpose: bool = False) -> Tensor:
    """``T^-1 y``, or ``T^-T y`` when ``transpose``."""
    # The anchor diagonal is checked where that costs no device synchronization.
    return _on_our_code(ic.solve, y, weight, orientation=orientation, check=y.device.type == "cpu", transpose=transpose)


def solve_vjp(grad_x: Tensor, x: Tensor, weight: Tensor, orientation: str) -> tuple[Tensor, Tensor]:
    if on_torch():
        grad_y = solve(grad_x, weight, orientation, transpose=True)
        with torch_convolutions(x.device):
            return grad_y, weight_grad_of_solve(grad_y, x, weight, orientation, _pad(x))
    return _on_our_code(ic.solve_vjp, grad_x, x, weight, orientation=orientation, check=False)
