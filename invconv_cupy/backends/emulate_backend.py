"""The ``emulate`` backend: the CUDA kernels compiled for the CPU, on NumPy arrays.

Slow and exact: it runs the real ``kernels/*.cu`` text (see
:mod:`invconv_cupy.emulator`), for tests and debugging without a GPU. ``device``
is the :class:`~invconv_cupy.emulator.EmulatorDevice` it launches on.
"""

import numpy as np

from ..emulator import EmulatorDevice
from .kernel_launch import bind

name = "emulate"
xp = np
device = EmulatorDevice()
conv, solve, weight_grad = bind(device)
