"""invconv_cupy: the inverse of a causal convolution, and exact backpropagation through it.

``conv``, ``solve``, ``conv_vjp``, ``solve_vjp`` and ``logdet`` take NumPy
arrays, CuPy arrays, torch tensors or any DLPack array and return the caller's
kind of array. CPU arrays run on a vectorized NumPy path, CUDA arrays on
hand-written CUDA kernels (through CuPy). See ``SPEC.md`` for the operator.
"""

from .api import conv, conv_vjp, logdet, solve, solve_vjp
from .backends import BACKENDS
from .orientation import ORIENTATIONS

__version__ = "0.1.0"

__all__ = ["conv", "solve", "conv_vjp", "solve_vjp", "logdet", "ORIENTATIONS", "BACKENDS", "__version__"]
