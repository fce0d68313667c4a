"""``--device`` for ``invconv-flow``: a torch device on which the adapter's ops also run."""

from __future__ import annotations

import torch

from invconv_cupy.cli.device import DEVICES, cuda_problem
from invconv_cupy.cli.errors import CliError


def _cuda_problem() -> str | None:
    """Why torch and CuPy (which runs the adapter's CUDA kernels) cannot both use a GPU, or None."""
    if not torch.cuda.is_available():
        return "torch sees no CUDA GPU (torch.cuda.is_available() is False)"
    return cuda_problem()


def torch_device(request: str) -> torch.device:
    """``"auto"``: CUDA when torch and CuPy can both use a GPU, else the CPU.

    Raises
    ------
    CliError
        For ``"cuda"`` without such a GPU, or an unknown name.
    """
    if request not in DEVICES:
        raise CliError(f"--device must be one of {', '.join(DEVICES)}, got {request!r}")
    problem = None if request == "cpu" else _cuda_problem()
    if request == "cpu" or (request == "auto" and problem is not None):
        return torch.device("cpu")
    if problem is not None:
        raise CliError(f"--device cuda: {problem}")
    return torch.device("cuda")
