"""The convolution family on torch's own convolutions (oneDNN on the CPU, cuDNN on CUDA).

A causal convolution is ``conv2d`` of the input zero-padded towards the
orientation's corner, with the anchor tap's upper triangle masked out
(SPEC.md); its transpose is ``conv2d`` of the gradient padded towards the
opposite corner with the flipped, channel-transposed weight; its weight
gradient is torch's weight-gradient path (``torch.nn.grad.conv2d_weight``) on
the padded input. Everything here is plain torch, so autograd, ``vmap`` and
``torch.compile`` see through it. The padding is done by ``pad`` (``F.pad``
unless the caller passes a :class:`PaddedBuffers`).

On CUDA, float32 convolutions follow torch's cuDNN TF32 setting
(``torch.backends.cudnn.allow_tf32``) exactly as ``nn.Conv2d`` does.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import Tensor

from invconv_cupy.orientation import parse_orientation


def causal_padding(orientation: str, kh: int, kw: int) -> tuple[int, int, int, int]:
    """``(left, right, top, bottom)`` zero padding that makes ``conv2d`` causal towards ``orientation``'s corner."""
    orient = parse_orientation(orientation)
    left, right = (0, kw - 1) if orient.flip_w else (kw - 1, 0)
    top, bottom = (0, kh - 1) if orient.flip_h else (kh - 1, 0)
    return left, right, top, bottom


def _mask_anchor_(weight: Tensor, orientation: str) -> Tensor:
    """Zero the anchor tap's entries above the diagonal of ``weight`` (..., C, C, KH, KW), in place."""
    a, e = parse_orientation(orientation).anchor(*weight.shape[-2:])
    weight.select(-2, a).select(-1, e).tril_()
    return weight


def masked_weight(weight: Tensor, orientation: str = "TL") -> Tensor:
    """A copy of ``weight`` with the anchor tap's entries above the diagonal zeroed (differentiable)."""
    return _mask_anchor_(weight.clone(), orientation)


def conv(x: Tensor, weight: Tensor, orientation: str = "TL", pad=F.pad) -> Tensor:
    """``T x``: the causal convolution, C-contiguous."""
    padding = causal_padding(orientation, *weight.shape[-2:])
    return F.conv2d(pad(x, padding), masked_weight(weight, orientation)).contiguous()


def conv_transpose(grad: Tensor, weight: Tensor, orientation: str = "TL", pad=F.pad) -> Tensor:
    """``T^T grad``: correlation towards the opposite corner with the flipped, channel-transposed weight."""
    left, right, top, bottom = causal_padding(orientation, *weight.shape[-2:])
    adjoint = masked_weight(weight, orientation).flip(-2, -1).transpose(0, 1)
    return F.conv2d(pad(grad, (right, left, bottom, top)), adjoint).contiguous()


def weight_grad(grad: Tensor, x: Tensor, kernel_size: tuple[int, int], orientation: str = "TL", pad=F.pad) -> Tensor:
    """The gradient of ``<grad, T x>`` in the weight, with the masked anchor entries zero."""
    channels = x.shape[1]
    padded = pad(x, causal_padding(orientation, *kernel_size))
    gw = torch.nn.grad.conv2d_weight(padded, (channels, channels, *kernel_size), grad)
    return _mask_anchor_(gw.contiguous(), orientation)


class PaddedBuffers(threading.local):
    """``F.pad`` into buffers kept for the next call of the same padded shape (per thread).

    On the CPU a fresh padded copy per convolution costs far more than the copy:
    it lifts the call's peak allocation over glibc's trim threshold, the freed
    memory goes back to the system and the next call page-faults it in again
    (measured on the 2-core VM at 100 x 12 x 32 x 32: about 4000 page faults
    and 3x the convolution's time per call). A buffer is only lent for one
    synchronous torch call that reads it and keeps no reference (not for
    autograd, transforms or CUDA, whose allocator caches memory anyway). Each
    call copies the interior, and zeroes the border where the previous call
    of the buffer had its interior; the last ``keep`` shapes are held.
    """

    def __init__(self, keep: int = 4):
        self.keep = keep
        self.buffers: dict[tuple, tuple[Tensor, tuple[int, int, int, int]]] = {}

    def __call__(self, x: Tensor, padding: tuple[int, int, int, int]) -> Tensor:
        left, right, top, bottom = padding
        B, C, H, W = x.shape
        shape = (B, C, H + top + bottom, W + left + right)
        key = (shape, x.dtype, x.device)
        buffer, zero_border = self.buffers.pop(key, (None, None))
        if buffer is None:
            while len(self.buffers) >= self.keep:
                del self.buffers[next(iter(self.buffers))]
            with torch.inference_mode(False):  # a normal tensor: writable in and out of inference mode
                buffer = torch.empty(shape, dtype=x.dtype, device=x.device)
        self.buffers[key] = buffer, padding  # most recently used last
        if zero_border != padding:
            buffer.zero_()
        buffer[:, :, top : top + H, left : left + W].copy_(x)
        return buffer
