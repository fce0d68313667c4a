"""The kernel backends the same test bodies run on: ``emulate`` always, ``cupy`` on a GPU."""

import numpy as np
import pytest

#: parametrize a test over these; the cupy case carries the ``gpu`` marker
KERNEL_BACKENDS = [pytest.param("emulate", id="emulate"), pytest.param("cupy", id="cupy", marks=pytest.mark.gpu)]


def to_backend(backend, *arrays):
    """The NumPy ``arrays`` as the backend's arrays (CuPy arrays for ``cupy``)."""
    if backend == "cupy":
        import cupy

        return tuple(cupy.asarray(a) for a in arrays)
    return arrays


def to_host(a):
    """A NumPy copy of a NumPy or CuPy array."""
    return a.get() if hasattr(a, "get") else np.asarray(a)
