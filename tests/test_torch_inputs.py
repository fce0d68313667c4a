"""What invconv_cupy.torch accepts and refuses: negative-bit views, dtypes and layouts,
autocast, the flow layers' constructor arguments and saved states.

Each case runs through the eager path and, where a tensor can reach it, the
dispatcher (``torch.ops.invconv_cupy``).
"""

import pytest

from torch_cases import DEVICES, randn, torch, weight

import invconv_cupy.torch as ict
from invconv_cupy.torch import reference

OPS = {
    "eager": {"conv": ict.conv, "solve": ict.solve},
    "dispatcher": {"conv": torch.ops.invconv_cupy.conv, "solve": torch.ops.invconv_cupy.solve},
}
REFERENCE = {"conv": reference.conv, "solve": reference.solve}


@pytest.mark.parametrize("op", ["conv", "solve"])
@pytest.mark.parametrize("path", OPS)
@pytest.mark.parametrize("device", DEVICES)
def test_negative_bit_inputs_and_gradients_keep_their_sign(rng, device, path, op):
    """Regression: a tensor with the negative bit set (``z.conj().imag``, ``t._neg_view()``) was read
    with the wrong sign, as an input and as the upstream gradient."""
    fn, ref = OPS[path][op], REFERENCE[op]
    w = weight(rng, 3, 2, 2, "TR", device=device)
    x, g = randn(rng, (2, 3, 4, 4), device=device), randn(rng, (2, 3, 4, 4), device=device)
    z = torch.complex(torch.zeros_like(x), x)
    assert z.conj().imag.is_neg()
    expected = ref(-x, w, "TR")
    for negated in (z.conj().imag, x._neg_view()):
        torch.testing.assert_close(fn(negated, w, "TR"), expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(fn(x, (-w)._neg_view(), "TR"), ref(x, w, "TR"), rtol=0, atol=1e-10)

    x.requires_grad_()
    w.requires_grad_()
    got = torch.autograd.grad(fn(x, w, "TR"), (x, w), g._neg_view())
    want = torch.autograd.grad(ref(x, w, "TR"), (x, w), -g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("op", ["conv", "solve"])
@pytest.mark.parametrize("path", OPS)
def test_unsupported_dtypes_raise_type_error_naming_the_argument(rng, path, op):
    fn = OPS[path][op]
    image = {"conv": "x", "solve": "y"}[op]
    w = weight(rng, 2, 2, 2, "TL")
    x = randn(rng, (1, 2, 3, 3))
    for dtype in (torch.bfloat16, torch.float16, torch.int64, torch.complex128):
        with pytest.raises(TypeError, match=rf"{image} must be float32 or float64, got {dtype}"):
            fn(x.to(dtype), w.to(dtype))
        with pytest.raises(TypeError, match=rf"weight must be float32 or float64, got {dtype}"):
            fn(x, w.to(dtype))
    z = torch.complex(x, x).conj()
    assert z.is_conj()
    with pytest.raises(TypeError, match=rf"{image} must be float32 or float64, got torch.complex128"):
        fn(z, w)


@pytest.mark.parametrize("op", ["conv", "solve"])
def test_sparse_and_non_tensor_arguments_raise_type_error(rng, op):
    fn = OPS["eager"][op]
    image = {"conv": "x", "solve": "y"}[op]
    w = weight(rng, 2, 2, 2, "TL")
    x = randn(rng, (1, 2, 3, 3))
    for sparse in (x.to_sparse(), x.reshape(6, 3).to_sparse_csr()):
        with pytest.raises(TypeError, match=rf"{image} must be a dense \(strided\) tensor, got layout {sparse.layout}"):
            fn(sparse, w)
    with pytest.raises(TypeError, match=r"weight must be a dense \(strided\) tensor, got layout torch.sparse_coo"):
        fn(x, w.to_sparse())
    with pytest.raises(TypeError, match=f"{image} must be a torch.Tensor, got numpy.ndarray"):
        fn(x.numpy(), w)


@pytest.mark.parametrize("op", ["conv", "solve"])
@pytest.mark.parametrize("path", OPS)
def test_autocast_runs_the_ops_in_float32(rng, path, op):
    """bfloat16 inputs are cast to float32; float32 inputs stay float32 all the way (no bfloat16 conv2d inside)."""
    fn = OPS[path][op]
    w = weight(rng, 3, 3, 3, "BL", torch.float32)
    x = randn(rng, (2, 3, 5, 5), torch.float32)
    expected_low = fn(x.bfloat16().float(), w.bfloat16().float(), "BL")
    expected = fn(x, w, "BL")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = fn(x.bfloat16(), w.bfloat16(), "BL")
        full = fn(x, w, "BL")
        assert torch.nn.functional.conv2d(x, w).dtype == torch.bfloat16  # autocast is really on
    assert low.dtype == full.dtype == torch.float32
    torch.testing.assert_close(low, expected_low, rtol=0, atol=0)
    torch.testing.assert_close(full, expected, rtol=0, atol=0)


def test_flow_layer_under_autocast_trains_in_float32(rng):
    layer = ict.InverseConv2d(2, 3, "TR", init_std=0.1)
    x = randn(rng, (2, 2, 4, 4), torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z, logdet = layer(x.bfloat16())
        back = layer.inverse(z)
    assert z.dtype == back.dtype == torch.float32
    (z.sum() - logdet.sum()).backward()
    assert layer.weight.grad.dtype == torch.float32 and torch.count_nonzero(layer.weight.grad) > 0
    torch.testing.assert_close(back, x.bfloat16().float(), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "args, kwargs, exc, words",
    [
        ((0, 3), {}, ValueError, "channels must be at least 1, got 0"),
        ((2.5, 3), {}, TypeError, "channels must be an integer, got float"),
        ((True, 3), {}, TypeError, "channels must be an integer, got bool"),
        ((2, 0), {}, ValueError, "kernel_size must be at least 1, got 0"),
        ((2, (3, 0)), {}, ValueError, r"kernel_size\[1\] must be at least 1, got 0"),
        ((2, (3, 3, 3)), {}, ValueError, "kernel_size must be an integer or a pair"),
        ((2, "3"), {}, TypeError, "kernel_size must be an integer, got str"),
        ((2, 3, "tl"), {}, ValueError, "orientation must be one of"),
        ((2, 3), {"init_std": -0.1}, ValueError, "init_std must be finite and at least 0"),
        ((2, 3), {"init_std": float("nan")}, ValueError, "init_std must be finite"),
        ((2, 3), {"init_std": "0.1"}, TypeError, "init_std must be a real number"),
        ((2, 3), {"dtype": torch.float16}, TypeError, "dtype must be torch.float32 or torch.float64"),
    ],
)
def test_layer_constructor_validates_its_arguments(args, kwargs, exc, words):
    with pytest.raises(exc, match=words):
        ict.InverseConv2d(*args, **kwargs)
    if len(args) == 2:  # the chain passes the same arguments on
        with pytest.raises(exc, match=words):
            ict.InverseConv2dChain(*args, **kwargs)


def test_chain_constructor_validates_orientations():
    with pytest.raises(TypeError, match="orientations must be a sequence of orientation names"):
        ict.InverseConv2dChain(2, 2, orientations="TL")
    with pytest.raises(ValueError, match="at least one"):
        ict.InverseConv2dChain(2, 2, orientations=())
    with pytest.raises(ValueError, match="orientation must be one of"):
        ict.InverseConv2dChain(2, 2, orientations=("TL", "XX"))


def test_state_dict_saves_the_orientation_and_checks_it_on_load():
    layer = ict.InverseConv2d(2, 3, "TR", init_std=0.1)
    state = layer.state_dict()
    assert state["_extra_state"] == {"orientation": "TR"}
    same = ict.InverseConv2d(2, 3, "TR")
    same.load_state_dict(state)
    torch.testing.assert_close(same.effective_weight(), layer.effective_weight(), rtol=0, atol=0)
    other = ict.InverseConv2d(2, 3, "TL")
    before = {k: v.clone() for k, v in other.state_dict().items() if isinstance(v, torch.Tensor)}
    with pytest.raises(ValueError, match="saved from an InverseConv2d with orientation 'TR'.*orientation is 'TL'"):
        other.load_state_dict(state)
    for key, value in before.items():  # nothing was half-loaded
        assert torch.equal(other.state_dict()[key], value)

    saved = ict.InverseConv2dChain(2, 3, orientations=("BR", "TL"), init_std=0.1)
    chain = ict.InverseConv2dChain(2, 3, orientations=("BR", "BL"))
    first_layer = chain.layers[0].weight.detach().clone()
    with pytest.raises(ValueError, match="orientation 'TL'.*this layer's orientation is 'BL'"):
        chain.load_state_dict(saved.state_dict())
    assert torch.equal(chain.layers[0].weight, first_layer)  # checked before the first layer was loaded
