"""Differentiable ``conv`` and ``solve``: custom ops, their rules, and the autograd.Function that carries them.

**Where the work runs** is :mod:`._work`'s business: ``solve`` on our own
code (NumPy path, CuPy kernels), ``conv`` and the weight gradients on torch's
convolutions (:func:`conv_route` switches those to our own code).

**Custom ops.** Five ``torch.library`` ops in the ``invconv_cupy`` namespace
(``conv``, ``solve``, their vector-Jacobian products ``conv_vjp`` and
``solve_vjp``, and ``solve_transpose``), each with a fake implementation and a
``vmap`` rule; ``conv`` and ``solve`` carry their backward rules and
autocast's float32 policy, so ``torch.compile(fullgraph=True)`` traces them,
backward graph included.

**One rule each, two carriers.** The backward rules (:func:`_conv_backward`,
:func:`_solve_backward`) and the forward-mode rules (:func:`_conv_jvp`,
:func:`_solve_jvp`) are written once. ``torch.compile`` reaches the backward
rules through the ops' ``register_autograd``; everything else (eager autograd,
``torch.autograd.forward_ad``, ``torch.func``) goes through
:class:`_ConvFunction`/:class:`_SolveFunction` (``setup_context``, ``jvp``,
``generate_vmap_rule``). Their pieces run the work directly in plain eager mode
(no dispatcher round trip); under ``torch.func`` the convolutions run as plain
torch (which ``vmap`` batches natively, a batch of weights included) and the
solves as custom ops with batching rules (:mod:`._vmap`). Dynamo cannot trace
an autograd.Function with a custom ``jvp``, which is why compiled code takes
the ops.

The rules (SPEC.md; ``T`` the convolution's matrix, ``x = solve(y, W)``)::

    conv:  backward  (T^T g,  weight_grad(g, x))
           jvp       conv(dx, W) + conv(x, dW)                 (bilinear)
    solve: backward  (gy = T^-T g,  -weight_grad(gy, x))
           jvp       solve(dy - conv(x, dW), W)

Double backward is not supported: differentiating a backward pass raises a
``RuntimeError``. On CUDA a zero on the anchor diagonal is not checked (that
would need a device-to-host read) and gives inf/nan; on the CPU ``solve``
raises ``ValueError``. :class:`.InverseConv2d` parameterizes the diagonal so
that it cannot be zero.
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor
from torch.autograd.function import once_differentiable

from invconv_cupy.orientation import parse_orientation

from . import _conv2d, _vmap, _work
from ._operands import autocast_to_float32, check_operands

_NS = "invconv_cupy"


# --- custom ops (what torch.compile, export and direct torch.ops calls see) ---


@torch.library.custom_op(f"{_NS}::conv", mutates_args=())
def _conv(x: Tensor, weight: Tensor, orientation: str = "TL") -> Tensor:
    check_operands(orientation, weight, "x", x)
    return _work.conv(x, weight, orientation)


@torch.library.custom_op(f"{_NS}::conv_vjp", mutates_args=())
def _conv_vjp(grad_y: Tensor, x: Tensor, weight: Tensor, orientation: str = "TL") -> tuple[Tensor, Tensor]:
    check_operands(orientation, weight, "x", x, ("grad_y", grad_y))
    return _work.conv_vjp(grad_y, x, weight, orientation)


@torch.library.custom_op(f"{_NS}::solve", mutates_args=())
def _solve(y: Tensor, weight: Tensor, orientation: str = "TL") -> Tensor:
    check_operands(orientation, weight, "y", y)
    return _work.solve(y, weight, orientation)


@torch.library.custom_op(f"{_NS}::solve_transpose", mutates_args=())
def _solve_transpose(grad_x: Tensor, weight: Tensor, orientation: str = "TL") -> Tensor:
    check_operands(orientation, weight, "grad_x", grad_x)
    return _work.solve(grad_x, weight, orientation, transpose=True)


@torch.library.custom_op(f"{_NS}::solve_vjp", mutates_args=())
def _solve_vjp(grad_x: Tensor, x: Tensor, weight: Tensor, orientation: str = "TL") -> tuple[Tensor, Tensor]:
    check_operands(orientation, weight, "x", x, ("grad_x", grad_x))
    return _work.solve_vjp(grad_x, x, weight, orientation)


def _empty(like: Tensor) -> Tensor:
    """A C-contiguous tensor of ``like``'s shape, dtype and device (the real outputs' layout)."""
    return torch.empty(like.shape, dtype=like.dtype, device=like.device)


@_conv.register_fake
def _(x, weight, orientation="TL"):
    check_operands(orientation, weight, "x", x)
    return _empty(x)


@_solve.register_fake
def _(y, weight, orientation="TL"):
    check_operands(orientation, weight, "y", y)
    return _empty(y)


@_solve_transpose.register_fake
def _(grad_x, weight, orientation="TL"):
    check_operands(orientation, weight, "grad_x", grad_x)
    return _empty(grad_x)


@_conv_vjp.register_fake
def _(grad_y, x, weight, orientation="TL"):
    check_operands(orientation, weight, "x", x, ("grad_y", grad_y))
    return _empty(grad_y), _empty(weight)


@_solve_vjp.register_fake
def _(grad_x, x, weight, orientation="TL"):
    check_operands(orientation, weight, "x", x, ("grad_x", grad_x))
    return _empty(grad_x), _empty(weight)


# Direct calls of the differentiable ops follow autocast's float32 policy as the public functions do.
for _op in (_conv, _solve):
    for _device_type in ("cpu", "cuda"):
        _op.register_autocast(_device_type, torch.float32)

_solve.register_vmap(_vmap.fold_images(_solve))
_solve_transpose.register_vmap(_vmap.fold_images(_solve_transpose))
for _op in (_conv, _conv_vjp, _solve_vjp):
    _op.register_vmap(_vmap.loop(_op))


# --- how each mode reaches the work --------------------------------------------


def _eager(*tensors: Tensor) -> bool:
    """True when plain eager execution can skip the dispatcher.

    Anything that traces or transforms (``torch.compile``, ``torch.export``,
    fake tensors, dispatch modes, ``vmap``/``grad``/``jvp``, tensor
    subclasses) goes another way (:func:`_call`).
    """
    return (
        not torch.compiler.is_compiling()
        and torch._C._len_torch_dispatch_stack() == 0
        and not torch._C._are_functorch_transforms_active()
        and all(type(t) in (Tensor, torch.nn.Parameter) for t in tensors)
    )


def _call(op, work, on_torch, *args):
    """Run one op on ``args`` the way the caller's mode needs it.

    - plain eager: ``work`` directly (no dispatcher round trip);
    - ``torch.compile``/``export``: the custom op ``op``, one opaque node;
    - any other transform, mode or subclass (``torch.func``, fake tensors): the
      plain-torch ``on_torch`` while the convolutions run on torch, which every
      transform sees through (``None`` for the solve), else the custom op.
    """
    tensors = [a for a in args if isinstance(a, Tensor)]
    if _eager(*tensors):
        return work(*args)
    if on_torch is not None and _work.on_torch() and not torch.compiler.is_compiling():
        with _work.torch_convolutions(tensors[0].device):
            return on_torch(*args)
    return op(*args)


def _solve_vjp_on_torch(grad_x, x, weight, orientation):
    """solve's backward with the transposed solve as an op, so that ``torch.func`` reaches its vmap rule."""
    grad_y = _solve_transpose(grad_x, weight, orientation)
    return grad_y, _work.weight_grad_of_solve(grad_y, x, weight, orientation)


def _conv_any(x, weight, orientation):
    return _call(_conv, _work.conv, _conv2d.conv, x, weight, orientation)


def _solve_any(y, weight, orientation):
    return _call(_solve, _work.solve, None, y, weight, orientation)


# --- the rules, written once -----------------------------------------------------


def _needed(ctx, grad_image, grad_weight):
    return (
        grad_image if ctx.needs_input_grad[0] else None,
        grad_weight if ctx.needs_input_grad[1] else None,
        None,
    )


def _conv_setup_context(ctx, inputs, output):
    x, weight, orientation = inputs
    ctx.orientation = orientation
    ctx.save_for_backward(x, weight)


def _solve_setup_context(ctx, inputs, output):
    _, weight, orientation = inputs
    ctx.orientation = orientation
    ctx.save_for_backward(output, weight)  # the rules take solve's OUTPUT


@once_differentiable
def _conv_backward(ctx, grad_y):
    x, weight = ctx.saved_tensors
    grads = _call(_conv_vjp, _work.conv_vjp, _work.conv_vjp_on_torch, grad_y, x, weight, ctx.orientation)
    return _needed(ctx, *grads)


@once_differentiable
def _solve_backward(ctx, grad_x):
    x, weight = ctx.saved_tensors
    grads = _call(_solve_vjp, _work.solve_vjp, _solve_vjp_on_torch, grad_x, x, weight, ctx.orientation)
    return _needed(ctx, *grads)


def _conv_jvp(ctx, dx, dweight, _):
    """``conv`` is bilinear: ``d conv(x, W) = conv(dx, W) + conv(x, dW)``."""
    x, weight = ctx.saved_tensors
    parts = []
    if dx is not None:
        parts.append(_conv_any(dx, weight, ctx.orientation))
    if dweight is not None:
        parts.append(_conv_any(x, dweight, ctx.orientation))
    return sum(parts[1:], parts[0])


def _solve_jvp(ctx, dy, dweight, _):
    """From ``conv(x, W) = y``: ``d solve(y, W) = solve(dy - conv(x, dW), W)`` with ``x = solve(y, W)``."""
    x, weight = ctx.saved_tensors
    if dweight is None:
        rhs = dy
    else:
        rhs = -_conv_any(x, dweight, ctx.orientation)
        if dy is not None:
            rhs = rhs + dy
    return _solve_any(rhs, weight, ctx.orientation)


_conv.register_autograd(_conv_backward, setup_context=_conv_setup_context)
_solve.register_autograd(_solve_backward, setup_context=_solve_setup_context)


class _ConvFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, orientation):
        return _conv_any(x, weight, orientation)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _conv_setup_context(ctx, inputs, output)
        ctx.save_for_forward(*inputs[:2])

    backward = staticmethod(_conv_backward)
    jvp = staticmethod(_conv_jvp)


class _SolveFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(y, weight, orientation):
        return _solve_any(y, weight, orientation)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _solve_setup_context(ctx, inputs, output)
        ctx.save_for_forward(output, inputs[1])

    backward = staticmethod(_solve_backward)
    jvp = staticmethod(_solve_jvp)


# --- public functions ------------------------------------------------------------


def _recorded(*tensors: Tensor) -> bool:
    """True when autograd or forward-mode AD would record a call on ``tensors``.

    Dual tensors only exist inside ``forward_ad.dual_level()`` (its level is
    ``forward_ad._current_level``, -1 outside).
    """
    return (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)) or fwAD._current_level >= 0


def _apply(function, op, work, name, image, weight, orientation):
    orientation = parse_orientation(orientation).name
    image, weight = autocast_to_float32(image, weight)
    check_operands(orientation, weight, name, image)
    if torch.compiler.is_compiling():
        return op(image, weight, orientation)
    if _eager(image, weight) and not _recorded(image, weight):
        return work(image, weight, orientation)  # e.g. sampling under no_grad: nothing to record
    return function.apply(image, weight, orientation)


def conv(x: Tensor, weight: Tensor, orientation: str = "TL") -> Tensor:
    """Causal convolution ``y = T x``, differentiable in ``x`` and ``weight``.

    Runs on torch's ``conv2d`` (oneDNN on the CPU, cuDNN on CUDA; see
    :func:`conv_route`). Supports autograd, forward-mode AD
    (``torch.autograd.forward_ad``, ``torch.func.jvp``), ``torch.func``
    (``grad``, ``vjp``, ``jacrev``, ``jacfwd``, ``vmap``, also over a batch of
    weights) and ``torch.compile(fullgraph=True)``.

    Parameters
    ----------
    x : Tensor, shape (B, C, H, W)
        float32 or float64, dense, on the CPU or a CUDA device, any strides.
        Under ``torch.autocast`` float16/bfloat16 inputs are cast to float32
        and the op runs (and returns) float32, like torch's float32-policy ops.
    weight : Tensor, shape (C, C, KH, KW)
        ``torch.nn.Conv2d`` layout, same dtype and device as ``x``. The anchor
        tap is used lower-triangular: entries above its diagonal are ignored
        and get zero gradient.
    orientation : {"TL", "TR", "BL", "BR"}
        The image corner the convolution looks towards.

    Returns
    -------
    Tensor, shape (B, C, H, W), C-contiguous.

    Raises
    ------
    TypeError
        An argument that is not a dense float32/float64 tensor (naming it).
    ValueError
        Shapes that do not fit, different devices, an unknown orientation.
    """
    return _apply(_ConvFunction, _conv, _work.conv, "x", x, weight, orientation)


def solve(y: Tensor, weight: Tensor, orientation: str = "TL") -> Tensor:
    """Inverse of the causal convolution, ``x = T^-1 y``, differentiable in ``y`` and ``weight``.

    Runs on our own solver (the NumPy path on the CPU, the CuPy kernels on
    CUDA); its backward's weight gradient on torch's convolutions. Supports
    what :func:`conv` supports; under ``vmap`` a batch of weights costs one
    solve per weight.

    Parameters
    ----------
    y : Tensor, shape (B, C, H, W)
        As ``x`` in :func:`conv` (autocast included).
    weight : Tensor, shape (C, C, KH, KW)
        Its anchor diagonal must be nonzero. On the CPU a zero raises
        ``ValueError``; on CUDA it is not checked (that would synchronize) and
        gives inf/nan.
    orientation : {"TL", "TR", "BL", "BR"}

    Returns
    -------
    Tensor, shape (B, C, H, W), C-contiguous, with ``conv(solve(y, w), w) == y``.

    Raises
    ------
    TypeError, ValueError
        As :func:`conv`.
    """
    return _apply(_SolveFunction, _solve, _work.solve, "y", y, weight, orientation)
