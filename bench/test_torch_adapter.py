"""InverseConv2d against nn.Conv2d of the same shape: sampling and a training step.

Groups (ratios ``ours / baseline`` in the summary, bench/conftest.py), float32,
3x3 kernels, at B x C x H x W = 64 x 16 x 8 x 8 and 100 x 12 x 32 x 32:

- ``sample``: ``InverseConv2d.inverse`` (a causal convolution on torch's
  ``conv2d``) against ``nn.Conv2d`` forward, both under ``no_grad``; goal <= 1.2.
  Also the same pass with the convolution on our own code
  (``conv_route("invconv_cupy")``: the NumPy path on the CPU).
- ``train``: ``InverseConv2d`` forward (a solve) + backward (transposed solve,
  weight gradient on torch) against ``nn.Conv2d`` forward + backward, the input
  requiring grad in both; goal <= 3 on the CPU.
- ``train parts``: what one training step of ours is made of, each part timed
  alone: the solve, the transposed solve (both the NumPy path on the CPU) and
  the weight gradient on torch.

Each timed call ends with ``torch.cuda.synchronize()`` on a GPU.

    python -m pytest bench/test_torch_adapter.py --benchmark-enable -m "not gpu"

The 2-core CPU machine is shared: for steadier numbers pin the thread pools,
``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python -m pytest ...``.
"""

import pytest
import torch
from torch import nn

import invconv_cupy.torch as ict
from invconv_cupy.torch import _conv2d, _work

SHAPES = [(64, 16, 8, 8), (100, 12, 32, 32)]
K = 3
GPU = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
DEVICES = ["cpu", pytest.param("cuda", marks=GPU)]
shape_id = lambda s: "x".join(map(str, s))  # noqa: E731


def _run(benchmark, device, group, shape, role, fn):
    benchmark.group = f"torch {group} {device} {shape_id(shape)} k{K} float32"
    benchmark.extra_info["role"] = role
    benchmark.extra_info["torch_threads"] = torch.get_num_threads()

    def timed():
        fn()
        if device == "cuda":
            torch.cuda.synchronize()

    rounds = {"cpu": 200 if shape[-1] <= 8 else 30, "cuda": 200}[device]
    benchmark.pedantic(timed, rounds=rounds, warmup_rounds=5, iterations=1)


def _layer(channels, device):
    torch.manual_seed(0)
    layer = ict.InverseConv2d(channels, K, "TL", init_std=0.05, device=device)
    with torch.no_grad():
        layer.log_scale.normal_(std=0.1)
    return layer


def _inputs(shape, device):
    return torch.randn(shape, device=device), torch.randn(shape, device=device)


# role -> where InverseConv2d's convolutions run (None: the nn.Conv2d baseline)
ROLES = {"ours": "torch", "ours, convolution on our own code": "invconv_cupy", "nn.Conv2d": None}


def _model(role, channels, device):
    if ROLES[role] is None:
        return nn.Conv2d(channels, channels, K, padding=K // 2, bias=False, device=device)
    return _layer(channels, device)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("device", DEVICES)
def test_sample(benchmark, device, shape, role):
    model = _model(role, shape[1], device)
    forward = model if ROLES[role] is None else model.inverse
    z, _ = _inputs(shape, device)

    @torch.no_grad()
    def sample():
        with ict.conv_route(ROLES[role] or "torch"):
            forward(z)

    _run(benchmark, device, "sample", shape, role, sample)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("device", DEVICES)
def test_train(benchmark, device, shape, role):
    model = _model(role, shape[1], device)
    x, g = _inputs(shape, device)
    x.requires_grad_()

    def step():
        with ict.conv_route(ROLES[role] or "torch"):
            if ROLES[role] is None:
                model(x).backward(g)
            else:
                z, logdet = model(x)
                torch.autograd.backward((z, logdet), (g, torch.ones_like(logdet)))

    _run(benchmark, device, "train", shape, role, step)


@pytest.mark.parametrize("part", ["ours", "solve", "transposed solve", "weight gradient"])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("device", DEVICES)
def test_train_parts(benchmark, device, shape, part):
    layer = _layer(shape[1], device)
    x, g = _inputs(shape, device)
    w = layer.effective_weight().detach()
    x.requires_grad_(part == "ours")

    def step():
        z, logdet = layer(x)
        torch.autograd.backward((z, logdet), (g, torch.ones_like(logdet)))

    work = {
        "ours": step,
        "solve": lambda: _work.solve(x, w, "TL"),
        "transposed solve": lambda: _work.solve(g, w, "TL", transpose=True),
        "weight gradient": lambda: _conv2d.weight_grad(g, x, (K, K), "TL"),
    }
    _run(benchmark, device, "train parts", shape, part, work[part])
