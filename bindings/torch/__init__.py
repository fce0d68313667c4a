"""PyTorch adapter, importable as ``invconv_cupy.torch``.

- :func:`conv`, :func:`solve`: differentiable custom ops (``torch.library``),
  traceable by ``torch.compile``; CPU tensors run the NumPy path, CUDA tensors
  the CuPy kernels on torch's current stream.
- :class:`InverseConv2d`: a normalizing-flow layer whose forward pass is the
  inverse convolution and whose sampling pass is a plain convolution;
  :class:`InverseConv2dChain` chains it over the four orientations.
- :mod:`.reference`: slow, plain-torch implementations of the same functions,
  differentiated by autograd (for tests and comparisons).
"""

from . import reference
from .flow import InverseConv2d, InverseConv2dChain
from .ops import conv, solve

__all__ = ["conv", "solve", "InverseConv2d", "InverseConv2dChain", "reference"]
