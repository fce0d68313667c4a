"""InverseConv2d and InverseConv2dChain: invertibility, logdet, parameterization, gradients."""

import pytest

from torch_cases import DEVICES, DTYPES, ORIENTATIONS, randn, torch

import invconv_cupy.torch as ict
from invconv_cupy.orientation import parse_orientation
from invconv_cupy.torch import reference


def _randomize(layer, generator):
    """Move a layer away from the identity: random free weights, scales and signs."""
    with torch.no_grad():
        layer.weight.normal_(std=0.1, generator=generator)
        layer.log_scale.normal_(std=0.2, generator=generator)
        layer.sign.copy_(torch.randint(0, 2, layer.sign.shape, generator=generator) * 2 - 1)


def _model(kind, channels, kernel_size, orientation, dtype, device, generator):
    if kind == "layer":
        model = ict.InverseConv2d(channels, kernel_size, orientation, dtype=dtype, device=device)
        layers = [model]
    else:
        model = ict.InverseConv2dChain(channels, kernel_size, dtype=dtype, device=device)
        layers = list(model.layers)
    for layer in layers:
        _randomize(layer, generator)
    return model


@pytest.fixture
def generator(rng):
    return torch.Generator().manual_seed(int(rng.integers(2**63)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["layer", "chain"])
@pytest.mark.parametrize("device", DEVICES)
def test_inverse_undoes_forward(rng, generator, device, kind, dtype):
    model = _model(kind, 3, (2, 3), "BL", dtype, "cpu", generator).to(device)
    x = randn(rng, (4, 3, 6, 5), dtype, device)
    z, logdet = model(x)
    assert z.shape == x.shape and logdet.shape == (4,) and logdet.dtype == dtype
    back = model.inverse(z)
    tol = {torch.float32: 1e-4, torch.float64: 1e-10}[dtype]
    torch.testing.assert_close(back, x, rtol=0, atol=tol * max(1.0, float(x.abs().max())))


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_layer_logdet_is_slogdet_of_the_autograd_jacobian(rng, generator, orientation):
    layer = _model("layer", 2, 2, orientation, torch.float64, "cpu", generator)
    x = randn(rng, (2, 2, 3, 4))
    z, logdet = layer(x)
    jacobian = torch.autograd.functional.jacobian(lambda image: layer(image[None])[0][0], x[1])
    _, expected = torch.linalg.slogdet(jacobian.reshape(24, 24))
    torch.testing.assert_close(logdet, expected.expand(2), rtol=1e-10, atol=1e-10)


def test_chain_logdet_is_slogdet_of_the_autograd_jacobian(rng, generator):
    chain = _model("chain", 2, 3, None, torch.float64, "cpu", generator)
    x = randn(rng, (1, 2, 3, 3))
    _, logdet = chain(x)
    jacobian = torch.autograd.functional.jacobian(lambda image: chain(image)[0], x).reshape(18, 18)
    torch.testing.assert_close(logdet[0], torch.linalg.slogdet(jacobian)[1], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_effective_weight_respects_mask_and_parameterization(generator, orientation):
    layer = _model("layer", 3, (3, 2), orientation, torch.float64, "cpu", generator)
    a, e = parse_orientation(orientation).anchor(3, 2)
    w = layer.effective_weight()
    anchor = w[:, :, a, e].detach()
    torch.testing.assert_close(anchor.triu(1), torch.zeros(3, 3, dtype=torch.float64), rtol=0, atol=0)
    torch.testing.assert_close(anchor.diagonal(), layer.sign * layer.log_scale.detach().exp())
    torch.testing.assert_close(anchor.tril(-1), layer.weight.detach()[:, :, a, e].tril(-1))
    off_anchor = torch.ones(3, 2, dtype=torch.bool)
    off_anchor[a, e] = False
    torch.testing.assert_close(w.detach()[:, :, off_anchor], layer.weight.detach()[:, :, off_anchor])


def test_masked_free_weights_get_zero_gradient(rng, generator):
    layer = _model("layer", 3, 2, "TR", torch.float64, "cpu", generator)
    z, logdet = layer(randn(rng, (2, 3, 4, 4)))
    (z.pow(2).sum() - logdet.sum()).backward()
    a, e = parse_orientation("TR").anchor(2, 2)
    upper_and_diagonal = layer.weight.grad[:, :, a, e].triu()
    assert torch.count_nonzero(upper_and_diagonal) == 0
    assert torch.count_nonzero(layer.weight.grad[:, :, a, e].tril(-1)) == 3


@pytest.mark.parametrize("device", DEVICES)
def test_parameter_gradients_match_the_reference(rng, generator, device):
    """The layer's parameter and input gradients against the plain-torch reference solve."""
    layer = _model("layer", 2, 3, "BR", torch.float64, "cpu", generator).to(device)
    x = randn(rng, (2, 2, 4, 3), device=device, requires_grad=True)

    def loss(z, logdet):
        return (0.5 * z.pow(2).sum((1, 2, 3)) - logdet).mean()

    params = (x, layer.weight, layer.log_scale)
    ours = torch.autograd.grad(loss(*layer(x)), params)
    z = reference.solve(x, layer.effective_weight(), "BR")
    expected = torch.autograd.grad(loss(z, layer.logdet(4, 3).expand(2)), params)
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_initialization_is_near_the_identity(rng):
    x = randn(rng, (2, 3, 5, 5))
    exact = ict.InverseConv2d(3, 3, init_std=0.0, dtype=torch.float64)
    z, logdet = exact(x)
    torch.testing.assert_close(z, x, rtol=0, atol=0)
    assert torch.count_nonzero(logdet) == 0
    near = ict.InverseConv2dChain(3, 3, dtype=torch.float64)
    with torch.no_grad():
        z, logdet = near(x)
    assert float((z - x).abs().max()) < 0.5 and torch.count_nonzero(logdet) == 0


def test_state_dict_keeps_parameters_and_signs_only(generator):
    layer = _model("layer", 2, 2, "TL", torch.float32, "cpu", generator)
    assert set(layer.state_dict()) == {"weight", "log_scale", "sign", "_extra_state"}
    copy = ict.InverseConv2d(2, 2)
    copy.load_state_dict(layer.state_dict())
    torch.testing.assert_close(copy.effective_weight(), layer.effective_weight())


def test_chain_needs_an_orientation():
    with pytest.raises(ValueError, match="at least one"):
        ict.InverseConv2dChain(2, 2, orientations=())
    with pytest.raises(ValueError, match="orientation"):
        ict.InverseConv2d(2, 2, "XX")
