"""PyTorch adapter, importable as ``invconv_cupy.torch``.

- :func:`conv`, :func:`solve`: differentiable ops (autograd, forward-mode AD,
  ``torch.func``, ``torch.compile``). ``solve`` runs the NumPy path for CPU
  tensors and the CuPy kernels on torch's current stream for CUDA tensors;
  ``conv`` runs on torch's own ``conv2d``.
- :func:`conv_route`: run the convolutions on our own code instead of torch's
  ``conv2d`` (for comparisons).
- :class:`InverseConv2d`: a normalizing-flow layer whose forward pass is the
  inverse convolution and whose sampling pass is a plain convolution;
  :class:`InverseConv2dChain` chains it over the four orientations.
- :mod:`.reference`: slow, plain-torch implementations of the same functions,
  differentiated by autograd (for tests and comparisons).
- :mod:`.flows` (import it explicitly; needs the ``flows`` extra, normflows):
  Inverse-Flow models; :mod:`.dequantization`: dequantization and bits per dimension.
"""

from . import reference
from .flow import InverseConv2d, InverseConv2dChain
from ._work import conv_route
from .ops import conv, solve

__all__ = ["conv", "solve", "conv_route", "InverseConv2d", "InverseConv2dChain", "reference"]
