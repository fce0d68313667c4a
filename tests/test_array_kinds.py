"""DLPack in, the caller's kind of array out, zero-copy where the layout allows."""

import numpy as np
import pytest

import invconv_cupy as ic
from conftest import make_weight

torch = pytest.importorskip("torch")


def test_torch_tensors_in_torch_tensors_out(rng):
    w = make_weight(rng, 3, 2, 2, "TR")
    x = rng.standard_normal((2, 3, 5, 4))
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    y = ic.conv(xt, wt, "TR")
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float64 and y.device.type == "cpu"
    np.testing.assert_array_equal(y.numpy(), ic.conv(x, w, "TR"))
    back = ic.solve(y, wt, "TR")
    np.testing.assert_allclose(back.numpy(), x, atol=1e-12)
    gy, gw = ic.solve_vjp(xt, back, wt, "TR")
    assert isinstance(gy, torch.Tensor) and isinstance(gw, torch.Tensor)
    value = ic.logdet(wt, 5, 4, "TR")
    assert isinstance(value, torch.Tensor) and value.ndim == 0
    assert float(value) == pytest.approx(ic.logdet(w, 5, 4, "TR"))


def test_torch_result_shares_memory_with_the_numpy_result(rng):
    x = torch.randn(1, 2, 3, 3, dtype=torch.float32)
    y = ic.conv(x, torch.from_numpy(make_weight(rng, 2, 1, 1, dtype=np.float32)))
    # zero-copy export: a numpy view of the tensor's memory, not a copy
    assert np.shares_memory(y.numpy(), np.from_dlpack(y))


def test_strided_torch_input(rng):
    w = make_weight(rng, 2, 3, 3)
    x = torch.from_numpy(rng.standard_normal((2, 5, 6, 2))).permute(0, 3, 1, 2)
    assert not x.is_contiguous()
    np.testing.assert_allclose(ic.solve(x, torch.from_numpy(w)).numpy(), ic.solve(np.ascontiguousarray(x.numpy()), w))


def test_tensor_that_requires_grad_is_refused_with_a_pointer_to_the_adapter(rng):
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(TypeError, match="requires grad.*invconv_cupy.torch"):
        ic.conv(x, torch.from_numpy(make_weight(rng, 2, 1, 1)))
