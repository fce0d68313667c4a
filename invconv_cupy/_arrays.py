"""DLPack in, DLPack out: any array in, the backend's array inside, the caller's kind back.

Inputs are imported zero-copy (``numpy.from_dlpack`` / ``cupy.from_dlpack``);
results go back to the kind of array the caller passed (NumPy, CuPy, torch, or
any library with a ``from_dlpack`` function), again zero-copy.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

# DLPack device types (dlpack.h, DLDeviceType).
_DL_CPU = 1
_DL_CUDA = 2
_DL_CUDA_HOST = 3
_DL_CUDA_MANAGED = 13


@dataclass(frozen=True)
class Device:
    """Where an array lives: ``kind`` is ``"cpu"`` or ``"cuda"``."""

    kind: str
    index: int = 0

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index}"


CPU = Device("cpu")


def device_of(obj, name: str) -> Device:
    """The device of a DLPack-capable array, or ``TypeError`` naming ``name``."""
    if isinstance(obj, np.ndarray):
        return CPU
    dlpack_device = getattr(obj, "__dlpack_device__", None)
    if dlpack_device is None or not hasattr(obj, "__dlpack__"):
        raise TypeError(
            f"{name} must be an array that supports DLPack (NumPy, CuPy, torch, ...), "
            f"got {type(obj).__module__}.{type(obj).__qualname__}"
        )
    dev_type, dev_index = (int(v) for v in dlpack_device())
    if dev_type in (_DL_CPU, _DL_CUDA_HOST):
        return CPU
    if dev_type in (_DL_CUDA, _DL_CUDA_MANAGED):
        return Device("cuda", dev_index)
    raise ValueError(f"{name} lives on DLPack device type {dev_type}; only CPU and CUDA are supported")


def _library_of(obj) -> str:
    return type(obj).__module__.split(".", 1)[0]


def _exportable_torch_tensor(t, name: str):
    """``t`` ready for DLPack: dense, not tracked by autograd, its lazy negation and conjugation applied.

    DLPack carries neither torch's negative bit (``t._neg_view()``, ``z.conj().imag``)
    nor its conjugate bit: exported as they are, such tensors would be read with
    the wrong sign. ``resolve_neg``/``resolve_conj`` copy only when a bit is set.
    """
    import torch

    if t.requires_grad:
        raise TypeError(
            f"{name} is a torch tensor that requires grad; the functional API does not "
            "record autograd: use invconv_cupy.torch for differentiable ops, or pass "
            f"{name}.detach()"
        )
    if t.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {t.layout}")
    return t.resolve_conj().resolve_neg()


def _from_dlpack(from_dlpack, obj, name: str):
    try:
        return from_dlpack(obj)
    except (BufferError, RuntimeError, TypeError, ValueError) as exc:
        dtype = getattr(obj, "dtype", "an unknown dtype")
        raise TypeError(f"{name} ({dtype}) cannot be imported through DLPack ({str(exc).rstrip('.')}); "
                        f"{name} must be a dense float32 or float64 array") from exc


def import_array(obj, name: str, device: Device):
    """Zero-copy view of ``obj`` as a NumPy (CPU) or CuPy (CUDA) array.

    A torch tensor with its negative or conjugate bit set is copied once, with the
    bit applied (a zero-copy export would flip its sign).
    """
    if isinstance(obj, np.ndarray):
        return obj
    library = _library_of(obj)
    if library == "torch":
        obj = _exportable_torch_tensor(obj, name)
    if device.kind == "cpu":
        return _from_dlpack(np.from_dlpack, obj, name)
    if library == "cupy":
        return obj
    try:
        import cupy
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            f"{name} is a CUDA array; CUDA arrays need CuPy: "
            "pip install 'invconv-cupy[cuda13]' (or [cuda12])"
        ) from exc
    return _from_dlpack(cupy.from_dlpack, obj, name)


def export_array(result, like):
    """Return ``result`` (NumPy or CuPy) as the kind of array ``like`` is."""
    if isinstance(like, np.ndarray):
        return result
    library = _library_of(like)
    if library in ("numpy", "cupy"):
        return result
    if library == "torch":
        import torch

        return torch.from_dlpack(result)
    from_dlpack = getattr(sys.modules.get(library), "from_dlpack", None)
    return from_dlpack(result) if from_dlpack is not None else result
