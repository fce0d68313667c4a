"""The ``cupy`` backend: the CUDA kernels on CuPy arrays, on the current CuPy stream."""

import cupy

from ..cuda_device import CupyDevice
from .kernel_launch import bind

name = "cupy"
xp = cupy
device = CupyDevice()
conv, solve, weight_grad = bind(device)
