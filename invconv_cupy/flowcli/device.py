"""``--device`` for ``invconv-flow``: a torch device on which the adapter's ops also run."""

from __future__ import annotations

import torch

from invconv_cupy.cli.device import DEVICES, _cuda_available
from invconv_cupy.cli.errors import CliError


def _cuda_ready() -> bool:
    """torch sees a GPU and CuPy (which runs the adapter's CUDA kernels) can use it."""
    return torch.cuda.is_available() and _cuda_available()


def torch_device(request: str) -> torch.device:
    """``"auto"``: CUDA when torch and CuPy both see a GPU, else the CPU.

    Raises
    ------
    CliError
        For ``"cuda"`` without such a GPU, or an unknown name.
    """
    if request not in DEVICES:
        raise CliError(f"--device must be one of {', '.join(DEVICES)}, got {request!r}")
    if request == "cpu" or (request == "auto" and not _cuda_ready()):
        return torch.device("cpu")
    if not _cuda_ready():
        raise CliError("--device cuda: torch and CuPy must both see a CUDA GPU (torch.cuda.is_available() "
                       "and cupy.cuda.is_available())")
    return torch.device("cuda")
