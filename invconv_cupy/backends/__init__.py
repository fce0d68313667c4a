"""Backends: each implements the same primitives on its own arrays.

A backend is a module with

- ``name``: its name; ``xp``: its array module (NumPy or CuPy);
- ``conv(x, w, orient, transpose=False)``: ``T x`` or ``T^T x``;
- ``solve(y, w, orient, transpose=False)``: ``T^-1 y`` or ``T^-T y``;
- ``weight_grad(g, x, kernel_size, orient, scale=1.0)``: ``scale`` times the
  weight gradient of ``<g, T x>``, masked anchor entries zero.

Inputs arrive validated, on the backend's device, in any strides; outputs are
fresh C-contiguous arrays. The weight's masked anchor entries (``c > o``) are
ignored by every primitive. Orientation handling stays inside the backend
(flipped views for NumPy, index mapping for kernels).
"""

from __future__ import annotations

import importlib

from .._arrays import Device

# name -> (module, device kind it runs on)
_BACKENDS = {
    "numpy": (".numpy_backend", "cpu"),
    "cupy": (".cupy_backend", "cuda"),
    "emulate": (".emulate_backend", "cpu"),
}

BACKENDS = tuple(_BACKENDS)


def default_backend(device: Device) -> str:
    """The backend used when the caller does not name one."""
    return "numpy" if device.kind == "cpu" else "cupy"


def get_backend(name, device: Device):
    """Import and return backend ``name`` after checking it runs where the data lives."""
    if name is None:
        name = default_backend(device)
    if name not in _BACKENDS:
        raise ValueError(f"backend must be None or one of {', '.join(map(repr, BACKENDS))}, got {name!r}")
    module, kind = _BACKENDS[name]
    if kind != device.kind:
        raise ValueError(
            f"backend {name!r} runs on {kind} arrays but the data is on {device}; "
            "move the data or pick another backend (no silent copies between devices)"
        )
    try:
        return importlib.import_module(module, __name__)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.endswith(module.lstrip(".")):
            raise NotImplementedError(f"backend {name!r} is not available in this build") from exc
        raise
