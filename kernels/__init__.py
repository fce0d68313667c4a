"""CUDA C kernel sources (``*.cu``), installed as ``invconv_cupy.kernels``.

The sources are read with :mod:`importlib.resources`, so they are found in a
wheel, an editable install and a source checkout alike.
"""
