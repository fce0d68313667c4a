"""invconv_cupy.torch.conv / solve: values against the dense oracle, gradcheck, opcheck, errors.

Every test runs on the CPU and, with the ``gpu`` marker, on CUDA; the ops are
called both through the eager path (``invconv_cupy.torch.conv``) and through the
dispatcher (``torch.ops.invconv_cupy.conv``).
"""

import numpy as np
import pytest

from oracle import Dense
from torch_cases import DEVICES, DTYPES, ORIENTATIONS, assert_close, randn, torch, weight

import invconv_cupy.torch as ict
from invconv_cupy.torch import reference

OPS = {
    "eager": (ict.conv, ict.solve),
    "dispatcher": (torch.ops.invconv_cupy.conv, torch.ops.invconv_cupy.solve),
}
# (B, C, H, W, KH, KW)
SHAPES = [(2, 3, 4, 5, 2, 3), (1, 1, 1, 1, 1, 1), (2, 2, 2, 3, 3, 4), (1, 4, 3, 2, 2, 1)]
shape_id = lambda s: "x".join(map(str, s))  # noqa: E731


@pytest.mark.parametrize("path", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("device", DEVICES)
def test_values_and_gradients_match_dense_oracle(rng, device, shape, orientation, dtype, path):
    B, C, H, W, KH, KW = shape
    conv, solve = OPS[path]
    w = weight(rng, C, KH, KW, orientation, dtype, device, requires_grad=True)
    x = randn(rng, (B, C, H, W), dtype, device, requires_grad=True)
    g = randn(rng, (B, C, H, W), dtype, device)
    dense = Dense(w.detach().cpu().double().numpy(), H, W, orientation)
    x64, g64 = x.detach().cpu().double().numpy(), g.cpu().double().numpy()

    y = conv(x, w, orientation)
    assert y.dtype == dtype and y.device == x.device and y.is_contiguous()
    assert_close(y, dense.conv(x64), dtype)
    grad_x, grad_w = torch.autograd.grad(y, (x, w), g)
    expected_x, expected_w = dense.conv_vjp(g64, x64)
    assert_close(grad_x, expected_x, dtype)
    assert_close(grad_w, expected_w, dtype)

    z = solve(x, w, orientation)
    assert z.dtype == dtype and z.device == x.device and z.is_contiguous()
    assert_close(z, dense.solve(x64), dtype)
    grad_y, grad_w = torch.autograd.grad(z, (x, w), g)
    expected_y, expected_w = dense.solve_vjp(g64, dense.solve(x64))
    assert_close(grad_y, expected_y, dtype)
    assert_close(grad_w, expected_w, dtype)


@pytest.mark.parametrize("path", OPS)
@pytest.mark.parametrize("op", ["conv", "solve"])
@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_both_inputs(rng, device, orientation, op, path):
    fn = OPS[path][op == "solve"]
    w = weight(rng, 3, 2, 3, orientation, device=device, requires_grad=True)
    x = randn(rng, (2, 3, 4, 5), device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: fn(x, w, orientation), (x, w))


@pytest.mark.parametrize("path", OPS)
@pytest.mark.parametrize("device", DEVICES)
def test_gradient_in_one_input_only(rng, device, path):
    conv, solve = OPS[path]
    w = weight(rng, 2, 2, 2, "BR", device=device, requires_grad=True)
    x = randn(rng, (1, 2, 3, 3), device=device, requires_grad=True)
    for fn in (conv, solve):
        (gx,) = torch.autograd.grad(fn(x, w.detach(), "BR").sum(), x)
        (gw,) = torch.autograd.grad(fn(x.detach(), w, "BR").sum(), w)
        ex, ew = torch.autograd.grad(fn(x, w, "BR").sum(), (x, w))
        torch.testing.assert_close(gx, ex, rtol=0, atol=0)
        torch.testing.assert_close(gw, ew, rtol=0, atol=0)


@pytest.mark.parametrize("op", ["conv", "solve", "conv_vjp", "solve_vjp", "solve_transpose"])
@pytest.mark.parametrize("shape", SHAPES[:2], ids=shape_id)
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(rng, device, shape, op):
    B, C, H, W, KH, KW = shape
    requires_grad = op in ("conv", "solve")
    w = weight(rng, C, KH, KW, "TR", device=device, requires_grad=requires_grad)
    x = randn(rng, (B, C, H, W), device=device, requires_grad=requires_grad)
    if requires_grad or op == "solve_transpose":
        args = (x, w, "TR")
    else:
        args = (randn(rng, (B, C, H, W), device=device), x, w, "TR")
    torch.library.opcheck(getattr(torch.ops.invconv_cupy, op).default, args)


@pytest.mark.parametrize("device", DEVICES)
def test_convolutions_run_on_torch_and_the_route_sends_them_to_our_code(rng, device, monkeypatch):
    """By default only the solves reach the functional API; under conv_route("invconv_cupy") the
    convolutions and weight gradients do too, with the same results."""
    import invconv_cupy as ic

    calls = []
    for name in ("conv", "conv_vjp", "solve", "solve_vjp"):
        real = getattr(ic, name)
        monkeypatch.setattr(ic, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    w = weight(rng, 3, 2, 3, "BL", device=device, requires_grad=True)
    x = randn(rng, (2, 3, 4, 5), device=device, requires_grad=True)
    g = randn(rng, (2, 3, 4, 5), device=device)

    def run():
        out = [ict.conv(x, w, "BL"), ict.solve(x, w, "BL")]
        return out + [grad for y in out for grad in torch.autograd.grad(y, (x, w), g)]

    on_torch = run()
    assert calls == ["solve", "solve"]  # forward and transposed solve; every convolution on torch
    calls.clear()
    with ict.conv_route("invconv_cupy"):
        ours = run()
    assert calls == ["conv", "solve", "conv_vjp", "solve_vjp"]
    for a, b in zip(on_torch, ours):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10 * max(1.0, float(b.abs().max())))
    with pytest.raises(ValueError, match="route must be one of 'torch', 'invconv_cupy', got 'cudnn'"):
        with ict.conv_route("cudnn"):
            pass


@pytest.mark.parametrize("orientation", ["TL", "BR"])
def test_results_of_our_code_reach_torch_for_every_shape(rng, orientation):
    """On the CPU our code's results come back through torch.from_numpy, which refuses negative
    strides: flipped axes of length one (BR, 1x1 images and kernels) included, values and
    gradients match the oracle."""
    for B, C, H, W, KH, KW in SHAPES:
        w = weight(rng, C, KH, KW, orientation, requires_grad=True)
        x = randn(rng, (B, C, H, W), requires_grad=True)
        g = randn(rng, (B, C, H, W))
        dense = Dense(w.detach().numpy(), H, W, orientation)
        with ict.conv_route("invconv_cupy"):
            y, z = ict.conv(x, w, orientation), ict.solve(x, w, orientation)
            grads = [torch.autograd.grad(out, (x, w), g) for out in (y, z)]
        assert_close(y, dense.conv(x.detach().numpy()), torch.float64)
        assert_close(z, dense.solve(x.detach().numpy()), torch.float64)
        expected = dense.conv_vjp(g.numpy(), x.detach().numpy()), dense.solve_vjp(g.numpy(), z.detach().numpy())
        for got, want in zip(grads, expected):
            assert_close(got[0], want[0], torch.float64)
            assert_close(got[1], want[1], torch.float64)


@pytest.mark.parametrize("path", OPS)
def test_empty_batch(rng, path):
    w = weight(rng, 2, 2, 2, "TL", requires_grad=True)
    x = randn(rng, (0, 2, 3, 3), requires_grad=True)
    for fn in OPS[path]:
        y = fn(x, w)
        assert y.shape == x.shape
        grad_x, grad_w = torch.autograd.grad(y.sum(), (x, w))
        assert grad_x.shape == x.shape and torch.count_nonzero(grad_w) == 0


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("device", DEVICES)
def test_agrees_with_the_plain_torch_reference(rng, device, orientation):
    """Values and autograd gradients of the reference implementation, on the same device."""
    w = weight(rng, 3, 3, 2, orientation, device=device, requires_grad=True)
    x = randn(rng, (2, 3, 4, 3), device=device, requires_grad=True)
    g = randn(rng, (2, 3, 4, 3), device=device)
    for ours, ref in ((ict.conv, reference.conv), (ict.solve, reference.solve)):
        got, want = ours(x, w, orientation), ref(x, w, orientation)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
        for a, b in zip(torch.autograd.grad(got, (x, w), g), torch.autograd.grad(want, (x, w), g)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("path", OPS)
def test_double_backward_raises(rng, path):
    conv, solve = OPS[path]
    w = weight(rng, 2, 2, 2, "TL", requires_grad=True)
    x = randn(rng, (1, 2, 3, 3), requires_grad=True)
    for fn in (conv, solve):
        (gx,) = torch.autograd.grad(fn(x, w).pow(2).sum(), x, create_graph=True)
        with pytest.raises(RuntimeError, match="differentiate twice|no autograd formula"):
            gx.sum().backward()


def test_strided_inputs_and_expanded_gradients(rng):
    w = weight(rng, 3, 2, 2, "BL", requires_grad=True)
    x = randn(rng, (2, 5, 4, 3)).permute(0, 3, 1, 2).requires_grad_()  # (2, 3, 5, 4), not contiguous
    assert not x.is_contiguous()
    z = ict.solve(x, w[:, :, :, :], "BL")
    z.sum().backward()  # the upstream gradient is an expanded (stride 0) tensor
    gy, gw = torch.autograd.grad(reference.solve(x, w, "BL").sum(), (x, w))
    torch.testing.assert_close(x.grad, gy, rtol=0, atol=1e-10)
    torch.testing.assert_close(w.grad, gw, rtol=0, atol=1e-10)


def test_inputs_are_not_modified(rng):
    w = weight(rng, 2, 3, 3, "TL", requires_grad=True)
    x = randn(rng, (2, 2, 4, 4), requires_grad=True)
    x0, w0 = x.detach().clone(), w.detach().clone()
    for fn in (ict.conv, ict.solve):
        fn(x, w).pow(2).sum().backward()
    assert torch.equal(x.detach(), x0) and torch.equal(w.detach(), w0)


@pytest.mark.parametrize("path", OPS)
def test_zero_anchor_diagonal_raises_on_cpu(rng, path):
    _, solve = OPS[path]
    w = weight(rng, 3, 2, 2, "TR")
    w[1, 1, 1, 0] = 0.0
    with pytest.raises(ValueError, match="channel 1"):
        solve(randn(rng, (1, 3, 3, 3)), w, "TR")


@pytest.mark.parametrize("path", OPS)
def test_bad_arguments_raise(rng, path):
    conv, solve = OPS[path]
    w = weight(rng, 3, 2, 2, "TL")
    x = randn(rng, (1, 3, 4, 4))
    for fn in (conv, solve):
        with pytest.raises(ValueError, match="orientation"):
            fn(x, w, "XY")
        with pytest.raises(ValueError, match="weight must have shape"):
            fn(x[:, :2], w)
        with pytest.raises(TypeError, match="dtype"):
            fn(x.float(), w)


def test_fake_tensors_propagate_shapes_and_check_arguments(rng):
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(2, 3, 5, 4, dtype=torch.float64)
        w = torch.empty(3, 3, 2, 2, dtype=torch.float64)
        for fn in (ict.conv, ict.solve):
            out = fn(x, w, "BR")
            assert out.shape == x.shape and out.dtype == x.dtype and out.is_contiguous()
            with pytest.raises(ValueError, match="weight must have shape"):
                fn(x[:, :2], w)


def test_padded_buffers_match_f_pad_whatever_came_before(rng):
    """The CPU work pads into reused buffers: every call equals F.pad, whichever padding the buffer held before."""
    from invconv_cupy.torch._conv2d import PaddedBuffers

    pad = PaddedBuffers(keep=2)
    paddings = [(2, 0, 1, 0), (0, 2, 0, 1), (0, 2, 0, 1), (1, 1, 1, 0), (2, 0, 1, 0)]  # one padded shape
    first = None
    for padding in paddings:
        x = randn(rng, (2, 3, 4, 5))
        got = pad(x, padding)
        torch.testing.assert_close(got, torch.nn.functional.pad(x, padding), rtol=0, atol=0)
        first = got.data_ptr() if first is None else first
        assert got.data_ptr() == first  # the same buffer, reused
    with torch.inference_mode():  # a buffer made in inference mode is still writable outside it
        pad(randn(rng, (1, 1, 2, 2)), (1, 0, 1, 0))
    x = randn(rng, (1, 1, 2, 2))
    torch.testing.assert_close(pad(x, (1, 0, 1, 0)), torch.nn.functional.pad(x, (1, 0, 1, 0)), rtol=0, atol=0)
    assert len(pad.buffers) == 2
    pad(randn(rng, (1, 1, 3, 3)), (1, 0, 1, 0))
    assert len(pad.buffers) == 2  # the oldest shape was dropped
