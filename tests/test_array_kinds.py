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


def test_negative_bit_tensors_are_read_with_their_sign(rng):
    """Regression: DLPack does not carry torch's negative bit (``z.conj().imag``, ``t._neg_view()``);
    such tensors were read with the wrong sign, as inputs and as gradients."""
    w = make_weight(rng, 3, 2, 3, "BL")
    x, g = rng.standard_normal((2, 2, 3, 4, 5))
    xt, gt, wt = torch.from_numpy(x), torch.from_numpy(g), torch.from_numpy(w)
    z = torch.complex(torch.zeros_like(xt), xt)
    for negated in (z.conj().imag, xt._neg_view()):
        assert negated.is_neg()
        np.testing.assert_array_equal(ic.conv(negated, wt, "BL").numpy(), ic.conv(-x, w, "BL"))
        np.testing.assert_array_equal(ic.solve(negated, wt, "BL").numpy(), ic.solve(-x, w, "BL"))
    minus_w = (-wt)._neg_view()  # reads as w
    np.testing.assert_array_equal(ic.conv(xt, minus_w, "BL").numpy(), ic.conv(x, w, "BL"))
    assert float(ic.logdet(minus_w, 3, 4, "BL")) == ic.logdet(w, 3, 4, "BL")
    for vjp in (ic.conv_vjp, ic.solve_vjp):
        got = vjp(gt._neg_view(), xt, wt, "BL")
        for a, b in zip(got, vjp(-g, x, w, "BL")):
            np.testing.assert_array_equal(a.numpy(), b)


def test_tensors_dlpack_cannot_carry_raise_type_error_naming_the_argument(rng):
    w = torch.from_numpy(make_weight(rng, 2, 2, 2))
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"x \(torch.bfloat16\) cannot be imported through DLPack.*float32 or float64"):
        ic.conv(x.bfloat16(), w)
    with pytest.raises(TypeError, match="weight must be a dense \\(strided\\) tensor, got layout torch.sparse_coo"):
        ic.solve(x, w.to_sparse())
    conjugated = torch.complex(x, x).conj()
    assert conjugated.is_conj()
    with pytest.raises(TypeError, match="y must be float32 or float64, got complex128"):
        ic.solve(conjugated, w)
