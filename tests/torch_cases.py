"""Shared cases for the torch adapter's tests: devices, shapes, weights as tensors."""

import pytest

from conftest import cuda_available, make_weight

torch = pytest.importorskip("torch")

# cuDNN may run float32 convolutions in TF32 (torch's default, which conv follows as nn.Conv2d
# does); the tests compare float32 results with a float64 oracle at 2e-4: full float32 here.
torch.backends.cudnn.allow_tf32 = False


def cuda_ready() -> bool:
    """A CUDA device that torch and CuPy can both use."""
    return torch.cuda.is_available() and cuda_available()


GPU = [pytest.mark.gpu, pytest.mark.skipif(not cuda_ready(), reason="needs a CUDA device and CuPy")]
DEVICES = ["cpu", pytest.param("cuda", marks=GPU)]
DTYPES = (torch.float32, torch.float64)
ORIENTATIONS = ("TL", "TR", "BL", "BR")
# rtol per dtype, relative to the size of the expected values (as conftest.assert_close)
TOL = {torch.float32: 2e-4, torch.float64: 1e-10}


def weight(rng, channels, kh, kw, orientation, dtype=torch.float64, device="cpu", requires_grad=False):
    """``conftest.make_weight`` (junk above the anchor diagonal included) as a tensor."""
    w = torch.from_numpy(make_weight(rng, channels, kh, kw, orientation)).to(device=device, dtype=dtype)
    return w.requires_grad_(requires_grad)


def randn(rng, shape, dtype=torch.float64, device="cpu", requires_grad=False):
    """Fresh normal data from the test's seeded ``rng``."""
    return torch.from_numpy(rng.standard_normal(shape)).to(device=device, dtype=dtype).requires_grad_(requires_grad)


def assert_close(actual, expected, dtype):
    """Absolute tolerance ``TOL[dtype]`` times the size of ``expected`` (at least 1)."""
    actual = torch.as_tensor(actual).detach().double().cpu()
    expected = torch.as_tensor(expected).detach().double().cpu()
    assert actual.shape == expected.shape
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=0, atol=TOL[dtype] * scale)
