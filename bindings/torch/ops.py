"""Differentiable ``conv`` and ``solve`` as ``torch.library`` custom ops.

Four ops live in the ``invconv_cupy`` namespace: ``conv`` and ``solve`` (with
autograd formulas) and their vector-Jacobian products ``conv_vjp`` and
``solve_vjp`` (the backward passes, ops themselves so that ``torch.compile``
traces the backward graph too). Every op has a fake implementation, so
``torch.compile(fullgraph=True)`` traces them without a graph break.

The real implementations call the functional API (:mod:`invconv_cupy.api`)
on detached tensors: CPU tensors run the NumPy path, CUDA tensors the CuPy
kernels, zero-copy through DLPack both ways. On CUDA the work runs on torch's
current stream with memory from torch's caching allocator
(:func:`._cuda.torch_launch_context`) and never synchronizes with the host, so
the ops can be captured in a CUDA graph. That is also why a zero on the anchor
diagonal is not checked on CUDA (it would need a device-to-host read): there it
gives inf/nan, on the CPU a ``ValueError``. :class:`.InverseConv2d`
parameterizes the diagonal so that it cannot be zero.

Plain eager calls skip the dispatcher: :func:`conv` and :func:`solve` then run
the same work through a ``torch.autograd.Function``: on a tiny CPU problem a
forward-plus-backward call took 810 us against 940 us through the dispatcher
(best of repeats; ``bench/test_torch_dispatch.py`` measures it on any device).
Anything that traces or transforms goes through the custom ops.

Double backward is not supported: differentiating the backward pass raises a
``RuntimeError`` instead of returning a wrong value.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

import invconv_cupy as ic
from invconv_cupy.orientation import parse_orientation

from ._cuda import torch_launch_context

_NS = "invconv_cupy"


def _check(name: str, x: Tensor, weight: Tensor, orientation: str) -> None:
    """The functional API's checks, for fake tensors (the real path runs the API's own)."""
    parse_orientation(orientation)
    if x.dim() != 4:
        raise ValueError(f"{name} must have 4 dimensions (B, C, H, W), got shape {tuple(x.shape)}")
    if weight.dim() != 4 or tuple(weight.shape[:2]) != (x.shape[1], x.shape[1]):
        raise ValueError(
            f"weight must have shape (C, C, KH, KW) with C = {x.shape[1]} from the image, got {tuple(weight.shape)}"
        )
    if x.dtype not in (torch.float32, torch.float64) or weight.dtype != x.dtype:
        raise TypeError(f"{name} and weight must share one dtype, float32 or float64, got {x.dtype} and {weight.dtype}")
    if x.device != weight.device:
        raise ValueError(f"{name} and weight must be on the same device, got {x.device} and {weight.device}")


def _empty(like: Tensor) -> Tensor:
    """A C-contiguous tensor of ``like``'s shape, dtype and device (the real outputs' layout)."""
    return torch.empty(like.shape, dtype=like.dtype, device=like.device)


def _check_diagonal(device: torch.device) -> bool:
    """Check the anchor diagonal where that costs no device synchronization."""
    return device.type == "cpu"


# --- the work: detach, launch where torch would, call the functional API ---


def _run_conv(x: Tensor, weight: Tensor, orientation: str = "TL") -> Tensor:
    with torch_launch_context(x.device):
        return ic.conv(x.detach(), weight.detach(), orientation)


def _run_conv_vjp(grad_y: Tensor, x: Tensor, weight: Tensor, orientation: str = "TL") -> tuple[Tensor, Tensor]:
    with torch_launch_context(x.device):
        return ic.conv_vjp(grad_y.detach(), x.detach(), weight.detach(), orientation)


def _run_solve(y: Tensor, weight: Tensor, orientation: str = "TL") -> Tensor:
    with torch_launch_context(y.device):
        return ic.solve(y.detach(), weight.detach(), orientation, check=_check_diagonal(y.device))


def _run_solve_vjp(grad_x: Tensor, x: Tensor, weight: Tensor, orientation: str = "TL") -> tuple[Tensor, Tensor]:
    with torch_launch_context(x.device):
        return ic.solve_vjp(grad_x.detach(), x.detach(), weight.detach(), orientation, check=False)


# --- custom ops (what torch.compile, export and other tracers see) ----------

_conv = torch.library.custom_op(f"{_NS}::conv", _run_conv, mutates_args=())
_conv_vjp = torch.library.custom_op(f"{_NS}::conv_vjp", _run_conv_vjp, mutates_args=())
_solve = torch.library.custom_op(f"{_NS}::solve", _run_solve, mutates_args=())
_solve_vjp = torch.library.custom_op(f"{_NS}::solve_vjp", _run_solve_vjp, mutates_args=())


@_conv.register_fake
def _(x, weight, orientation="TL"):
    _check("x", x, weight, orientation)
    return _empty(x)


@_solve.register_fake
def _(y, weight, orientation="TL"):
    _check("y", y, weight, orientation)
    return _empty(y)


@_conv_vjp.register_fake
@_solve_vjp.register_fake
def _(grad, x, weight, orientation="TL"):
    _check("x", x, weight, orientation)
    return _empty(grad), _empty(weight)


def _needed(ctx, grad_first, grad_weight):
    return (
        grad_first if ctx.needs_input_grad[0] else None,
        grad_weight if ctx.needs_input_grad[1] else None,
        None,
    )


def _conv_setup_context(ctx, inputs, output):
    x, weight, orientation = inputs
    ctx.orientation = orientation
    ctx.save_for_backward(x, weight)


def _conv_backward(ctx, grad_y):
    x, weight = ctx.saved_tensors
    return _needed(ctx, *_conv_vjp(grad_y, x, weight, ctx.orientation))


def _solve_setup_context(ctx, inputs, output):
    _, weight, orientation = inputs
    ctx.orientation = orientation
    ctx.save_for_backward(output, weight)  # solve_vjp takes solve's OUTPUT


def _solve_backward(ctx, grad_x):
    x, weight = ctx.saved_tensors
    return _needed(ctx, *_solve_vjp(grad_x, x, weight, ctx.orientation))


_conv.register_autograd(_conv_backward, setup_context=_conv_setup_context)
_solve.register_autograd(_solve_backward, setup_context=_solve_setup_context)


# --- the eager path: the same work, without the dispatcher ---------------------


class _ConvFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, orientation):
        ctx.orientation = orientation
        ctx.save_for_backward(x, weight)
        return _run_conv(x, weight, orientation)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        return _needed(ctx, *_run_conv_vjp(grad_y, x, weight, ctx.orientation))


class _SolveFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, weight, orientation):
        x = _run_solve(y, weight, orientation)
        ctx.orientation = orientation
        ctx.save_for_backward(x, weight)
        return x

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_x):
        x, weight = ctx.saved_tensors
        return _needed(ctx, *_run_solve_vjp(grad_x, x, weight, ctx.orientation))


def _eager(*tensors: Tensor) -> bool:
    """True when plain eager execution can skip the dispatcher.

    Anything that traces or transforms (``torch.compile``, ``torch.export``,
    fake tensors, dispatch modes, ``vmap``/``grad``, tensor subclasses) goes
    through the custom ops instead.
    """
    return (
        not torch.compiler.is_compiling()
        and torch._C._len_torch_dispatch_stack() == 0
        and not torch._C._are_functorch_transforms_active()
        and all(type(t) in (Tensor, torch.nn.Parameter) for t in tensors)
    )


# --- public functions ------------------------------------------------------


def conv(x: Tensor, weight: Tensor, orientation: str = "TL") -> Tensor:
    """Causal convolution ``y = T x``, differentiable in ``x`` and ``weight``.

    Parameters
    ----------
    x : Tensor, shape (B, C, H, W)
        float32 or float64, on the CPU or a CUDA device, any strides.
    weight : Tensor, shape (C, C, KH, KW)
        ``torch.nn.Conv2d`` layout, same dtype and device as ``x``. The anchor
        tap is used lower-triangular: entries above its diagonal are ignored
        and get zero gradient.
    orientation : {"TL", "TR", "BL", "BR"}
        The image corner the convolution looks towards.

    Returns
    -------
    Tensor, shape (B, C, H, W), C-contiguous.
    """
    orientation = parse_orientation(orientation).name
    if _eager(x, weight):
        return _ConvFunction.apply(x, weight, orientation)
    return _conv(x, weight, orientation)


def solve(y: Tensor, weight: Tensor, orientation: str = "TL") -> Tensor:
    """Inverse of the causal convolution, ``x = T^-1 y``, differentiable in ``y`` and ``weight``.

    Parameters
    ----------
    y : Tensor, shape (B, C, H, W)
    weight : Tensor, shape (C, C, KH, KW)
        Its anchor diagonal must be nonzero. On the CPU a zero raises
        ``ValueError``; on CUDA it is not checked (that would synchronize) and
        gives inf/nan.
    orientation : {"TL", "TR", "BL", "BR"}

    Returns
    -------
    Tensor, shape (B, C, H, W), C-contiguous, with ``conv(solve(y, w), w) == y``.
    """
    orientation = parse_orientation(orientation).name
    if _eager(y, weight):
        return _SolveFunction.apply(y, weight, orientation)
    return _solve(y, weight, orientation)
