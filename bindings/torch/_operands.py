"""The ops' tensor arguments: autocast's float32 policy, and checks that name the argument.

The checks are the functional API's (:mod:`invconv_cupy.api`) restated for
tensors, so that they also run on fake tensors while tracing and before any
work is queued.
"""

from __future__ import annotations

import torch
from torch import Tensor

from invconv_cupy.orientation import parse_orientation

_FLOAT_DTYPES = (torch.float32, torch.float64)
_AUTOCAST_DTYPES = (torch.float16, torch.bfloat16)


def autocast_to_float32(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Under ``torch.autocast`` for the tensors' device, float16/bfloat16 tensors become float32.

    Like torch's own float32-policy ops, float64 is left alone. Outside autocast
    the tensors come back unchanged (a low-precision one is then refused by
    :func:`check_operands`).
    """
    first = tensors[0]
    if not isinstance(first, Tensor) or not torch.is_autocast_enabled(first.device.type):
        return tensors
    return tuple(t.float() if isinstance(t, Tensor) and t.dtype in _AUTOCAST_DTYPES else t for t in tensors)


def _check_tensor(name: str, t) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__module__}.{type(t).__qualname__}")
    if t.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {t.layout}")
    if t.dtype not in _FLOAT_DTYPES:
        hint = " (float16 and bfloat16 are accepted under torch.autocast, which runs the ops in float32)"
        raise TypeError(f"{name} must be float32 or float64, got {t.dtype}" + (hint if t.is_floating_point() else ""))


def check_operands(orientation: str, weight: Tensor, name: str, image: Tensor, *others: tuple[str, Tensor]) -> None:
    """Raise ``TypeError``/``ValueError`` naming the argument unless the operands fit one call.

    ``image`` (called ``name``) sets the shape, dtype and device that ``weight``
    and the other image-shaped ``(name, tensor)`` pairs in ``others`` must fit.
    """
    parse_orientation(orientation)
    _check_tensor(name, image)
    _check_tensor("weight", weight)
    shape = image.shape
    if len(shape) != 4:
        raise ValueError(f"{name} must have 4 dimensions (B, C, H, W), got shape {tuple(shape)}")
    if min(shape[1:]) < 1:
        raise ValueError(f"{name} must have at least one channel, row and column, got shape {tuple(shape)}")
    channels = shape[1]
    if weight.dim() != 4 or weight.shape[:2] != (channels, channels):
        raise ValueError(
            f"weight must have shape (C, C, KH, KW) with C = {channels} from the image, got {tuple(weight.shape)}"
        )
    if min(weight.shape[2:]) < 1:
        raise ValueError(f"weight's kernel height and width must be at least 1, got {tuple(weight.shape)}")
    for other_name, other in others:
        _check_tensor(other_name, other)
        if other.shape != shape:
            raise ValueError(f"{other_name} must have the shape of {name} {tuple(shape)}, got {tuple(other.shape)}")
    for other_name, other in (("weight", weight), *others):
        if other.dtype != image.dtype:
            raise TypeError(
                f"{name} and {other_name} must share one dtype, float32 or float64, got {image.dtype} and {other.dtype}"
            )
        if other.device != image.device:
            raise ValueError(
                f"{name} and {other_name} must be on the same device, got {image.device} and {other.device}"
            )
