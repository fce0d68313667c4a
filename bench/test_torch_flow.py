"""A stack of InverseConv2d layers against plain convolutions, in PyTorch.

Two groups per device, each reporting ``ours / baseline`` (bench/conftest.py):

- ``train``: one optimizer step (forward + backward + SGD) of 4 ``InverseConv2d``
  layers (TL, TR, BL, BR) against 4 ``nn.Conv2d`` layers of the same weight and
  image shapes (cuDNN on a GPU; the floor an invertible layer could hope for).
- ``sample``: the sampling pass of the same flow, which is 4 convolutions,
  against a flow whose sampling needs a solve (the Emerging/MaCow-style layer:
  ``z = conv(x)``, so ``x = solve(z)``), same weights.

Each timed call ends with ``torch.cuda.synchronize()`` on a GPU.
GPU (B=64, C=16, 64x64, 3x3, float32):

    python -m pytest bench/test_torch_flow.py --benchmark-enable -m gpu

CPU (B=4, C=4, 32x32): ``python -m pytest bench/test_torch_flow.py --benchmark-enable -m "not gpu"``.
"""

import pytest
import torch
from torch import nn

import invconv_cupy.torch as ict

K, LAYERS = 3, 4
SIZES = {"cpu": (4, 4, 32, 32), "cuda": (64, 16, 64, 64)}
GPU = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
DEVICES = ["cpu", pytest.param("cuda", marks=GPU)]


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _run(benchmark, device, group, role, fn):
    benchmark.group = f"torch {group} {device} {'x'.join(map(str, SIZES[device]))} k{K} float32, {LAYERS} layers"
    benchmark.extra_info["role"] = role

    def timed():
        fn()
        _sync(device)

    benchmark.pedantic(timed, rounds=20 if device == "cpu" else 50, warmup_rounds=3, iterations=1)


def _flow(device):
    torch.manual_seed(0)
    flow = ict.InverseConv2dChain(SIZES[device][1], K, init_std=0.05, device=device)
    with torch.no_grad():
        for layer in flow.layers:
            layer.log_scale.normal_(std=0.1)
    return flow


def _nll(z, logdet):
    """Negative log-likelihood per dimension under a standard normal (up to a constant)."""
    return (0.5 * z.pow(2).sum((1, 2, 3)) - logdet).mean() / z[0].numel()


@pytest.mark.parametrize("device", DEVICES)
def test_train_step_inverse_conv(benchmark, device):
    flow = _flow(device)
    x = torch.randn(SIZES[device], device=device)
    optimizer = torch.optim.SGD(flow.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad(set_to_none=False)
        _nll(*flow(x)).backward()
        optimizer.step()

    _run(benchmark, device, "train", "ours", step)


@pytest.mark.parametrize("device", DEVICES)
def test_train_step_conv2d(benchmark, device):
    C = SIZES[device][1]
    net = nn.Sequential(*(nn.Conv2d(C, C, K, padding=K // 2, bias=False) for _ in range(LAYERS))).to(device)
    x = torch.randn(SIZES[device], device=device)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad(set_to_none=False)
        net(x).pow(2).mean().backward()
        optimizer.step()

    _run(benchmark, device, "train", "nn.Conv2d", step)


@pytest.mark.parametrize("device", DEVICES)
def test_sample_by_convolution(benchmark, device):
    flow = _flow(device)
    z = torch.randn(SIZES[device], device=device)

    @torch.no_grad()
    def sample():
        flow.inverse(z)

    _run(benchmark, device, "sample", "ours", sample)


@pytest.mark.parametrize("device", DEVICES)
def test_sample_by_solve(benchmark, device):
    flow = _flow(device)
    z = torch.randn(SIZES[device], device=device)

    @torch.no_grad()
    def sample():
        x = z
        for layer in reversed(flow.layers):
            x = ict.solve(x, layer.effective_weight(), layer.orientation)

    _run(benchmark, device, "sample", "sampling by solve", sample)
