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
``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python -m pytest ...``; its speed
drifts within minutes, and ``bench/torch_step_ratios.py`` times the same
workloads (``torch_workloads.py``) with ours and the baseline in turn.
"""

import pytest
import torch

import invconv_cupy.torch as ict
from invconv_cupy.torch import _conv2d, _work
from torch_workloads import K, SHAPES, conv2d, environment, inputs, inverse_conv, sample_pass, training_step

GPU = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
DEVICES = ["cpu", pytest.param("cuda", marks=GPU)]
shape_id = lambda s: "x".join(map(str, s))  # noqa: E731


def _run(benchmark, device, group, shape, role, fn):
    benchmark.group = f"torch {group} {device} {shape_id(shape)} k{K} float32"
    benchmark.extra_info["role"] = role
    benchmark.extra_info.update(environment())  # threads, CPU, the BLAS kernels under the NumPy solve

    def timed():
        fn()
        if device == "cuda":
            torch.cuda.synchronize()

    rounds = {"cpu": 200 if shape[-1] <= 8 else 30, "cuda": 200}[device]
    benchmark.pedantic(timed, rounds=rounds, warmup_rounds=5, iterations=1)


# role -> where InverseConv2d's convolutions run (None: the nn.Conv2d baseline)
ROLES = {"ours": "torch", "ours, convolution on our own code": "invconv_cupy", "nn.Conv2d": None}


def _model(role, channels, device):
    return conv2d(channels, device) if ROLES[role] is None else inverse_conv(channels, device)


def _on_route(role, fn, *args):
    """``fn(*args)`` with InverseConv2d's convolutions where ``role`` runs them."""

    def run():
        with ict.conv_route(ROLES[role] or "torch"):
            fn(*args)

    return run


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("device", DEVICES)
def test_sample(benchmark, device, shape, role):
    z, _ = inputs(shape, device)
    _run(benchmark, device, "sample", shape, role, _on_route(role, sample_pass(_model(role, shape[1], device)), z))


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("device", DEVICES)
def test_train(benchmark, device, shape, role):
    x, g = inputs(shape, device)
    x.requires_grad_()
    _run(benchmark, device, "train", shape, role, _on_route(role, training_step(_model(role, shape[1], device)), x, g))


@pytest.mark.parametrize("part", ["ours", "solve", "transposed solve", "weight gradient"])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("device", DEVICES)
def test_train_parts(benchmark, device, shape, part):
    layer = inverse_conv(shape[1], device)
    x, g = inputs(shape, device)
    w = layer.effective_weight().detach()
    x.requires_grad_(part == "ours")
    step = training_step(layer)

    work = {
        "ours": lambda: step(x, g),
        "solve": lambda: _work.solve(x, w, "TL"),
        "transposed solve": lambda: _work.solve(g, w, "TL", transpose=True),
        "weight gradient": lambda: _conv2d.weight_grad(g, x, (K, K), "TL"),
    }
    _run(benchmark, device, "train parts", shape, part, work[part])
