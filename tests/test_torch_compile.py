"""torch.compile(fullgraph=True) traces the ops and the flow layer with no graph break.

``backend="aot_eager"`` runs dynamo, the fake implementations and AOTAutograd's
joint forward-backward graph without inductor's C++ build (about 40 s on a
2-core CPU), which keeps CI fast; the results must equal eager execution.
"""

import pytest

from torch_cases import DEVICES, randn, torch, weight

import invconv_cupy.torch as ict


def _counter():
    from torch._dynamo.testing import CompileCounterWithBackend

    return CompileCounterWithBackend("aot_eager")


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_function_of_both_ops_matches_eager(rng, device):
    def loss(x, w):
        z = ict.solve(x, w, "TR")
        return ict.conv(z.tanh(), w, "BL").pow(2).sum()

    torch._dynamo.reset()
    counter = _counter()
    compiled = torch.compile(loss, fullgraph=True, backend=counter)
    w = weight(rng, 3, 2, 2, "TR", device=device, requires_grad=True)
    with torch.no_grad():  # BL's anchor diagonal must be nonzero too
        w[:, :, 0, 1] += torch.eye(3, dtype=w.dtype, device=device)
    x = randn(rng, (2, 3, 5, 4), device=device, requires_grad=True)

    value = compiled(x, w)
    grads = torch.autograd.grad(value, (x, w))
    expected = loss(x, w)
    expected_grads = torch.autograd.grad(expected, (x, w))
    assert counter.frame_count == 1
    names = [str(node.target) for graph in counter.graphs for node in graph.graph.nodes]
    assert "invconv_cupy.solve.default" in names and "invconv_cupy.conv.default" in names
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=0)
    for a, b in zip(grads, expected_grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_compiled_flow_training_step_matches_eager(rng):
    torch.manual_seed(int(rng.integers(2**31)))
    model = ict.InverseConv2dChain(2, 3, dtype=torch.float64, init_std=0.1)
    x = randn(rng, (3, 2, 4, 4))

    def nll(x):
        z, logdet = model(x)
        return (0.5 * z.pow(2).sum((1, 2, 3)) - logdet).mean()

    torch._dynamo.reset()
    compiled = torch.compile(nll, fullgraph=True, backend="aot_eager")
    value = compiled(x)
    grads = torch.autograd.grad(value, list(model.parameters()))
    expected = nll(x)
    expected_grads = torch.autograd.grad(expected, list(model.parameters()))
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=0)
    for a, b in zip(grads, expected_grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
