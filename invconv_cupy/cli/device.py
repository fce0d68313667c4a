"""Where the numbers are crunched: NumPy + SciPy on the CPU, or CuPy + cupyx on a CUDA GPU."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from .errors import CliError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Compute:
    """An array module and its sparse linear algebra (``cg``, ``LinearOperator``).

    Attributes
    ----------
    name : {"cpu", "cuda"}
    xp : module
        ``numpy`` or ``cupy``.
    linalg : module
        ``scipy.sparse.linalg`` or ``cupyx.scipy.sparse.linalg``.
    """

    name: str
    xp: ModuleType
    linalg: ModuleType

    def to_device(self, array):
        """``array`` as a float64 array of this device."""
        return self.xp.asarray(array, dtype=self.xp.float64)

    def to_host(self, array) -> np.ndarray:
        """``array`` as a NumPy array."""
        return array if isinstance(array, np.ndarray) else self.xp.asnumpy(array)


def _cuda_available() -> bool:
    try:
        import cupy
    except ImportError:
        return False
    try:
        return bool(cupy.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken CUDA install reports in many ways; it means "no GPU"
        return False


def resolve_device(request: str) -> Compute:
    """Pick the device for ``--device``.

    Parameters
    ----------
    request : {"auto", "cpu", "cuda"}
        ``"auto"`` is ``"cuda"`` when CuPy sees a GPU, else ``"cpu"``.

    Raises
    ------
    CliError
        For ``"cuda"`` without a usable GPU and CuPy.
    """
    if request not in DEVICES:
        raise CliError(f"--device must be one of {', '.join(DEVICES)}, got {request!r}")
    if request == "cpu" or (request == "auto" and not _cuda_available()):
        return Compute("cpu", np, importlib.import_module("scipy.sparse.linalg"))
    if not _cuda_available():
        raise CliError("--device cuda: no CUDA GPU is available to CuPy (cupy.cuda.is_available() is False)")
    try:
        linalg = importlib.import_module("cupyx.scipy.sparse.linalg")
    except ImportError as exc:
        raise CliError(f"--device cuda: cupyx.scipy.sparse.linalg cannot be imported ({exc})") from None
    return Compute("cuda", importlib.import_module("cupy"), linalg)
