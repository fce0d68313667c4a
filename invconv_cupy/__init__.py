"""invconv_cupy: the inverse of a causal convolution, and exact backpropagation through it.

``conv``, ``solve``, ``conv_vjp``, ``solve_vjp`` and ``logdet`` take NumPy
arrays, CuPy arrays, torch tensors or any DLPack array and return the caller's
kind of array. CPU arrays run on a vectorized NumPy path, CUDA arrays on
hand-written CUDA kernels (through CuPy). The operator's contract (shapes,
orientations, the anchor tap, errors) is in the README's "The operator" section;
``anchor_index`` gives the anchor tap's position for each orientation.
"""

from .api import conv, conv_vjp, logdet, solve, solve_vjp
from .backends import BACKENDS
from .orientation import ORIENTATIONS, anchor_index

__version__ = "0.1.0"

__all__ = ["conv", "solve", "conv_vjp", "solve_vjp", "logdet", "anchor_index", "ORIENTATIONS", "BACKENDS", "__version__"]
