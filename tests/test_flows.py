"""invconv_cupy.torch.flows: the Inverse-Flow models on normflows, their log-determinants, bits per dimension."""

import math

import numpy as np
import pytest

from flow_cases import nf, one_thread, torch  # noqa: F401 (one_thread: an autouse fixture)

import invconv_cupy.torch.flow as flow_module  # noqa: E402
from invconv_cupy.torch import flows  # noqa: E402
from invconv_cupy.torch.dequantization import bits_per_dim, dequantize, quantize  # noqa: E402

BUILDERS = {"inverse_flow": flows.inverse_flow, "glow": flows.glow, "solve_sampling_flow": flows.solve_sampling_flow}


def _randomized(name, shape, generator, steps=2, hidden=6):
    """A float64 model of ``shape`` moved away from its identity-like start: every parameter and sign random.

    The inverse convolutions' taps move less, so that samples stay inside the logit's float64 range.
    """
    model = BUILDERS[name](shape, levels=2, steps=steps, hidden=hidden).double()
    model.log_prob(torch.rand(8, *shape, dtype=torch.float64, generator=generator) * 0.8 + 0.1, None)  # ActNorm init
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
        for module in model.modules():
            if isinstance(module, flows.InverseConvFlow):
                module.layer.weight.mul_(0.3)
                module.layer.sign.copy_(torch.randint(0, 2, module.layer.sign.shape, generator=generator) * 2 - 1)
    return model


@pytest.fixture
def generator(rng):
    return torch.Generator().manual_seed(int(rng.integers(2**63)))


@pytest.mark.parametrize("name", BUILDERS)
def test_sample_to_density_round_trip_is_exact(name, generator):
    model = _randomized(name, (2, 4, 4), generator)
    z = [q0.forward(5)[0] for q0 in model.q0]
    for latent in z:
        latent.copy_(torch.randn(latent.shape, generator=generator, dtype=latent.dtype))
    with torch.no_grad():
        x, logdet_forward = model.forward_and_log_det(z)
        z_back, logdet_inverse = model.inverse_and_log_det(x)
    for a, b in zip(z_back, z):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
    torch.testing.assert_close(logdet_inverse, -logdet_forward, rtol=0, atol=1e-9)
    assert logdet_forward.abs().min() > 1e-3  # not a trivial identity


@pytest.mark.parametrize("name", BUILDERS)
def test_log_prob_of_samples_matches_sampling(name, generator):
    model = _randomized(name, (1, 4, 8), generator)
    torch.manual_seed(int(torch.randint(2**31, (1,), generator=generator)))
    with torch.no_grad():
        x, log_q = model.sample(6)  # log_q: the density the sample was drawn from (at temperature 1)
        log_p = model.log_prob(x, None)
    torch.testing.assert_close(log_p, log_q, rtol=0, atol=1e-8 * max(1.0, float(log_q.abs().max())))


@pytest.mark.parametrize("name", BUILDERS)
def test_whole_model_logdet_equals_brute_force_jacobian(name, generator):
    shape = (1, 4, 4)
    model = _randomized(name, shape, generator)
    u = torch.rand(1, *shape, dtype=torch.float64, generator=generator) * 0.8 + 0.1

    def to_latent(flat):
        z, _ = model.inverse_and_log_det(flat.view(1, *shape))
        return torch.cat([part.flatten() for part in z])

    jacobian = torch.autograd.functional.jacobian(to_latent, u.flatten())
    sign, expected = torch.linalg.slogdet(jacobian)
    assert sign != 0
    _, logdet = model.inverse_and_log_det(u)
    torch.testing.assert_close(logdet, expected.view(1), rtol=0, atol=1e-8 * max(1.0, float(expected.abs())))


def test_paper_step_order_and_orientation_cycle():
    model = flows.inverse_flow((1, 8, 8), levels=2, steps=5, hidden=4)
    for level in model.flows:
        data_to_latent = list(reversed(level))  # normflows lists a level latent to data
        assert isinstance(data_to_latent[0], nf.flows.Squeeze)
        pairs = list(zip(data_to_latent[1::2], data_to_latent[2::2]))
        assert [type(a) for a, _ in pairs] == [flows.InverseConvFlow] * 5
        assert [type(b) for _, b in pairs] == [flows.GlowStep] * 5
        assert [a.layer.orientation for a, _ in pairs] == ["TL", "TR", "BL", "BR", "TL"]
        for _, step in pairs:  # data to latent inside a step: ActNorm, 1x1, coupling
            kinds = [type(f) for f in reversed(step.flows)]
            assert kinds == [nf.flows.ActNorm, nf.flows.Invertible1x1Conv, nf.flows.AffineCouplingBlock]
            assert isinstance(step.flows[0].flows[1], flows.BoundedAffineCoupling)
    glow = flows.glow((1, 8, 8), levels=2, steps=5, hidden=4)
    assert not any(isinstance(m, (flows.InverseConvFlow, flows.SolveSamplingFlow)) for m in glow.modules())
    counts = [sum(p.numel() for p in m.parameters()) for m in (model, glow)]
    assert counts[0] > counts[1]


def _refuse(*_args, **_kwargs):
    raise AssertionError("called an operation this direction must not need")


@pytest.mark.parametrize("name, forbidden", [("inverse_flow", "solve"), ("solve_sampling_flow", "conv")])
def test_sampling_pass_uses_only_its_operation(name, forbidden, generator, monkeypatch):
    model = _randomized(name, (1, 4, 4), generator)
    monkeypatch.setattr(flow_module, forbidden, _refuse)
    with torch.no_grad():
        x, _ = model.sample(3)
    assert torch.isfinite(x).all()
    with pytest.raises(AssertionError, match="must not need"):
        model.log_prob(x, None)


def test_layers_run_the_operator_in_the_right_direction(generator):
    layer = flows.InverseConvFlow(3, 2, "BR", dtype=torch.float64)
    with torch.no_grad():
        layer.layer.weight.normal_(std=0.3, generator=generator)
        layer.layer.log_scale.normal_(std=0.3, generator=generator)
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, generator=generator)
    weight = layer.layer.effective_weight()
    from invconv_cupy.torch import conv, solve

    z, logdet = layer.inverse(x)
    torch.testing.assert_close(z, solve(x, weight, "BR"))
    torch.testing.assert_close(logdet, torch.full((2,), -20 * layer.layer.log_scale.sum().item(), dtype=torch.float64))
    swapped = flows.SolveSamplingFlow(3, 2, "BR", dtype=torch.float64)
    swapped.flow.load_state_dict(layer.state_dict())
    z2, logdet2 = swapped.inverse(x)
    torch.testing.assert_close(z2, conv(x, weight, "BR"))
    torch.testing.assert_close(logdet2, -logdet)


def test_bounded_coupling_cannot_blow_up(generator):
    class Huge(torch.nn.Module):  # raw log-scales of +-1e4: exp would overflow, sigmoid would vanish
        def forward(self, z1):
            return torch.cat([z1, 1e4 * torch.sign(z1 + 0.01)], dim=1)

    coupling = flows.BoundedAffineCoupling(Huge(), bound=2.0)
    z1, z2 = (torch.randn(4, 1, 3, 3, generator=generator) for _ in range(2))
    [_, x2], logdet = coupling([z1, z2])
    [_, back], logdet_back = coupling.inverse([z1, x2])
    assert torch.isfinite(x2).all() and (logdet.abs() <= 2.0 * 9 + 1e-4).all()
    torch.testing.assert_close(back, z2)
    torch.testing.assert_close(logdet_back, -logdet)
    with pytest.raises(ValueError, match="bound"):
        flows.BoundedAffineCoupling(Huge(), bound=0)


@pytest.mark.parametrize("kwargs, match", [
    ({"input_shape": (1, 6, 8)}, "multiples of 2\\*\\*levels = 4"),
    ({"input_shape": (8, 8)}, "input_shape must be"),
    ({"input_shape": (0, 8, 8)}, "channels"),
    ({"levels": 0}, "levels"),
    ({"steps": 1.5}, "steps"),
    ({"hidden": 0}, "hidden"),
    ({"logit_alpha": 0.5}, "logit_alpha"),
])
@pytest.mark.parametrize("name", BUILDERS)
def test_builders_refuse_bad_arguments(name, kwargs, match):
    arguments = {"input_shape": (1, 8, 8), **kwargs}
    with pytest.raises(ValueError, match=match):
        BUILDERS[name](**arguments)


class _BinModel:
    """A density on [0, 1)^D that is constant on each level's bin: ``levels * p[bin]`` per dimension."""

    def __init__(self, p):
        self.p = torch.as_tensor(p, dtype=torch.float64)

    def log_prob(self, u, _):
        bins = quantize(u, len(self.p))
        return torch.log(len(self.p) * self.p[bins]).flatten(1).sum(1)


def test_bits_per_dim_on_a_distribution_of_known_entropy(rng):
    from invconv_cupy.flowcli.scoring import score

    levels = int(rng.integers(3, 20))
    p = rng.dirichlet(np.ones(levels))
    images = rng.choice(levels, size=(4000, 1, 2, 3), p=p).astype(np.uint8)
    result = score(_BinModel(p), images, levels, draws=3, batch=700,
                   generator=torch.Generator().manual_seed(int(rng.integers(2**31))), device=torch.device("cpu"))
    # The model is the data's distribution: its code length is the empirical cross-entropy, exactly ...
    np.testing.assert_allclose(result.per_image, -np.log2(p[images]).mean(axis=(1, 2, 3)), rtol=0, atol=1e-10)
    # ... which estimates the entropy.
    entropy = -(p * np.log2(p)).sum()
    spread = np.sqrt((p * np.log2(p) ** 2).sum() - entropy**2) / np.sqrt(images.size)
    assert abs(result.mean - entropy) < 5 * spread + 1e-12
    low, high = result.interval(0.95)
    assert low < result.mean < high and result.draw_means.shape == (3,)


def test_bits_per_dim_arithmetic():
    # A uniform density on the unit cube codes uniform data in exactly log2(levels) bits per dimension.
    assert bits_per_dim(torch.zeros(3), 10, 256).tolist() == [8.0] * 3
    assert math.isclose(float(bits_per_dim(torch.tensor(-10 * math.log(2)), 10, 2)), 2.0)
    with pytest.raises(ValueError, match="levels"):
        bits_per_dim(torch.zeros(1), 4, 1)
    with pytest.raises(ValueError, match="dims"):
        bits_per_dim(torch.zeros(1), 0, 2)


def test_dequantize_stays_in_each_values_bin(generator):
    levels = 17
    x = torch.randint(0, levels, (50, 1, 4, 4), generator=generator, dtype=torch.uint8)
    u = dequantize(x, levels, generator)
    assert u.dtype == torch.float32 and (u >= 0).all() and (u < 1).all()
    assert torch.equal(quantize(u, levels), x.long())
    assert (u * levels - x).std() > 0.2  # the noise is there
    with pytest.raises(TypeError, match="integer"):
        dequantize(u, levels)


def test_dequantize_keeps_the_top_of_each_bin_inside_it(generator):
    # In float32, 255 + noise rounds up to 256 for noise above 1 - 2**-17: about 8 in
    # a million draws here, each of which would land on the next bin's edge.
    levels = 256
    x = torch.full((1_000_000,), levels - 1, dtype=torch.uint8)
    x[::2] = torch.randint(128, levels, (500_000,), generator=generator, dtype=torch.uint8)
    u = dequantize(x, levels, generator)
    assert torch.equal(quantize(u, levels), x.long()) and (u < 1).all()


def test_short_training_lowers_held_out_bpd(generator):
    from invconv_cupy.flowcli.data import load
    from invconv_cupy.flowcli.scoring import score

    digits = load("digits")
    torch.manual_seed(int(torch.randint(2**31, (1,), generator=generator)))
    model = flows.inverse_flow((1, 8, 8), levels=2, steps=1, hidden=16)
    train = torch.from_numpy(digits.train)

    def held_out():
        return score(model, digits.test, 17, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))

    model.log_prob(dequantize(train[:200], 17, generator), None)  # ActNorm's initialization
    before = held_out().mean
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(20):
        batch = train[torch.randint(len(train), (64,), generator=generator)]
        optimizer.zero_grad()
        (-model.log_prob(dequantize(batch, 17, generator), None).mean()).backward()
        optimizer.step()
    after = held_out().mean
    assert after < before - 0.3, (before, after)  # about 0.7 measured
