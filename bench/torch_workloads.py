"""What the PyTorch adapter's benchmarks time: ``InverseConv2d`` against ``nn.Conv2d`` of the same shape.

Shared by ``bench/test_torch_adapter.py`` (pytest-benchmark, one group after
another) and ``bench/torch_step_ratios.py`` (rounds of ours and the baseline in
turn). Float32, 3x3 kernels, orientation TL.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch
from torch import nn

import invconv_cupy.torch as ict

SHAPES = [(64, 16, 8, 8), (100, 12, 32, 32)]
K = 3


def inverse_conv(channels: int, device) -> ict.InverseConv2d:
    """An ``InverseConv2d`` away from the identity (free weights std 0.05, log-scales std 0.1), seed 0."""
    torch.manual_seed(0)
    layer = ict.InverseConv2d(channels, K, "TL", init_std=0.05, device=device)
    with torch.no_grad():
        layer.log_scale.normal_(std=0.1)
    return layer


def conv2d(channels: int, device) -> nn.Conv2d:
    """The baseline: ``nn.Conv2d`` with the same channels and kernel, same-size output, no bias."""
    return nn.Conv2d(channels, channels, K, padding=K // 2, bias=False, device=device)


def inputs(shape, device) -> tuple[torch.Tensor, torch.Tensor]:
    """An input and an upstream gradient of ``shape``."""
    return torch.randn(shape, device=device), torch.randn(shape, device=device)


def sample_pass(model):
    """One sampling call under ``no_grad``: ``model.inverse`` for ours, ``model`` itself for ``nn.Conv2d``."""
    forward = model.inverse if isinstance(model, ict.InverseConv2d) else model

    @torch.no_grad()
    def run(z):
        return forward(z)

    return run


def training_step(model):
    """One forward+backward with the input requiring grad; ours also back-propagates its log-determinant."""
    if isinstance(model, ict.InverseConv2d):

        def run(x, g):
            z, logdet = model(x)
            torch.autograd.backward((z, logdet), (g, torch.ones_like(logdet)))

    else:

        def run(x, g):
            model(x).backward(g)

    return run


def environment() -> dict:
    """Threads, CPU and the BLAS kernels in use (threadpoolctl's view, where it is installed)."""
    info = {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
    }
    try:
        import threadpoolctl
    except ImportError:
        info["blas"] = "unknown (threadpoolctl not installed)"
    else:
        import numpy  # noqa: F401  (loads NumPy's BLAS, so that threadpoolctl sees it)

        info["blas"] = [
            {key: pool.get(key) for key in ("internal_api", "architecture", "num_threads", "version")}
            for pool in threadpoolctl.threadpool_info()
            if pool.get("user_api") == "blas"
        ]
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
