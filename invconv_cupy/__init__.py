"""invconv_cupy: the inverse of a causal convolution, and exact backpropagation through it.

``conv``, ``solve``, ``conv_vjp``, ``solve_vjp`` and ``logdet`` take NumPy
arrays, CuPy arrays, torch tensors or any DLPack array and return the caller's
kind of array. CPU arrays run on a vectorized NumPy path, CUDA arrays on
hand-written CUDA kernels (through CuPy). The operator's contract (shapes,
orientations, the anchor tap, errors) is in the README's "The operator" section;
``anchor_index`` gives the anchor tap's position for each orientation.
"""

import importlib

__version__ = "0.1.0"

# Each public name and the submodule defining it, imported on first use: importing
# the package (and the command line) stays cheap until NumPy is needed.
_EXPORTS = {
    "conv": "api", "solve": "api", "conv_vjp": "api", "solve_vjp": "api", "logdet": "api",
    "ORIENTATIONS": "orientation", "anchor_index": "orientation", "BACKENDS": "backends",
}

__all__ = [
    "conv", "solve", "conv_vjp", "solve_vjp", "logdet", "anchor_index", "ORIENTATIONS", "BACKENDS", "__version__",
]


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
