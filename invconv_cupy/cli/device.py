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


def cuda_problem() -> str | None:
    """Why CuPy cannot compute on a GPU here, or None when it can.

    Any failure to import or initialize CuPy counts: besides a missing package or
    driver, ``import cupy`` raises ``OSError`` when it cannot create ``~/.cupy``
    (a service account whose home folder is missing or read-only).
    """
    try:
        import cupy
    except Exception as exc:  # noqa: BLE001 - every way the import fails means "no GPU"
        return f"CuPy cannot be imported ({type(exc).__name__}: {exc})"
    try:
        if cupy.cuda.is_available():
            return None
    except Exception as exc:  # noqa: BLE001 - a broken CUDA install reports in many ways; it means "no GPU"
        return f"CUDA cannot be initialized ({type(exc).__name__}: {exc})"
    return "no CUDA GPU is available to CuPy (cupy.cuda.is_available() is False)"


def resolve_device(request: str) -> Compute:
    """Pick the device for ``--device``.

    Parameters
    ----------
    request : {"auto", "cpu", "cuda"}
        ``"auto"`` is ``"cuda"`` when CuPy can use a GPU (:func:`cuda_problem`), else ``"cpu"``.

    Raises
    ------
    CliError
        For ``"cuda"`` without a usable GPU and CuPy, saying why.
    """
    if request not in DEVICES:
        raise CliError(f"--device must be one of {', '.join(DEVICES)}, got {request!r}")
    problem = None if request == "cpu" else cuda_problem()
    if request == "cpu" or (request == "auto" and problem is not None):
        return Compute("cpu", np, importlib.import_module("scipy.sparse.linalg"))
    if problem is not None:
        raise CliError(f"--device cuda: no CUDA GPU can be used: {problem}")
    try:
        linalg = importlib.import_module("cupyx.scipy.sparse.linalg")
    except Exception as exc:  # noqa: BLE001 - as for cupy itself
        raise CliError(f"--device cuda: cupyx.scipy.sparse.linalg cannot be imported ({exc})") from None
    return Compute("cuda", importlib.import_module("cupy"), linalg)
