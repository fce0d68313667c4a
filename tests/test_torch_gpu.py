"""CUDA specifics of the torch adapter: torch's stream, torch's allocator, CUDA-graph capture.

(Values, gradcheck, opcheck and torch.compile on CUDA are the ``cuda`` cases of
the other test_torch_* modules.)
"""

import pytest

from torch_cases import GPU, randn, torch, weight

import invconv_cupy as ic
import invconv_cupy.torch as ict
from invconv_cupy.torch._cuda import _torch_allocator

pytestmark = GPU


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(rng, dtype):
    w = weight(rng, 4, 3, 3, "BR", dtype, requires_grad=True)
    x = randn(rng, (3, 4, 33, 17), dtype, requires_grad=True)
    g = randn(rng, (3, 4, 33, 17), dtype)
    wc, xc = (t.detach().cuda().requires_grad_() for t in (w, x))
    tol = {torch.float32: 1e-4, torch.float64: 1e-10}[dtype]
    for fn in (ict.conv, ict.solve):
        cpu = fn(x, w, "BR")
        cuda = fn(xc, wc, "BR")
        assert cuda.device.type == "cuda"
        torch.testing.assert_close(cuda.cpu(), cpu, rtol=tol, atol=tol)
        for a, b in zip(torch.autograd.grad(cuda, (xc, wc), g.cuda()), torch.autograd.grad(cpu, (x, w), g)):
            torch.testing.assert_close(a.cpu(), b, rtol=tol, atol=tol * max(1.0, float(b.abs().max())))


def test_work_runs_on_torchs_current_stream_with_torchs_allocator(rng, monkeypatch):
    """The functional API is entered with CuPy's stream = torch's current (non-default) stream
    and CuPy's allocator = torch's; and the result is right even when the inputs are
    produced late on that stream (queued behind a long sleep)."""
    import cupy

    seen = []
    real_solve = ic.solve

    def spy(*args, **kwargs):
        seen.append((cupy.cuda.get_current_stream().ptr, cupy.cuda.get_allocator()))
        return real_solve(*args, **kwargs)

    monkeypatch.setattr(ic, "solve", spy)
    w = weight(rng, 3, 2, 2, "TL", torch.float32, "cuda")
    x = randn(rng, (2, 3, 64, 64), torch.float32, "cuda")
    expected = ict.solve(x, w)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        torch.cuda._sleep(50_000_000)  # ~tens of ms: the solve must queue behind it
        late = x * 2.0
        z = ict.solve(late, w)
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    assert seen[-1][0] == stream.cuda_stream != torch.cuda.default_stream().cuda_stream
    assert seen[-1][1] == _torch_allocator()
    torch.testing.assert_close(z, expected * 2.0, rtol=1e-5, atol=1e-5)


def test_outputs_come_from_torchs_caching_allocator(rng):
    import cupy

    w = weight(rng, 3, 3, 3, "TR", torch.float32, "cuda")
    x = randn(rng, (4, 3, 128, 128), torch.float32, "cuda")
    pool_before = cupy.get_default_memory_pool().used_bytes()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    z = ict.solve(x, w, "TR")
    y = ict.conv(x, w, "TR")
    torch.cuda.synchronize()
    outputs = 2 * x.numel() * x.element_size()
    held = torch.cuda.memory_allocated()
    assert held - before >= outputs
    assert cupy.get_default_memory_pool().used_bytes() == pool_before
    del z, y
    torch.cuda.synchronize()
    assert held - torch.cuda.memory_allocated() >= outputs  # freed back to torch's allocator


def test_cuda_graph_captures_a_forward_backward_step(rng):
    """Capture forward + backward of a flow once, replay on new data, compare with eager."""
    torch.manual_seed(int(rng.integers(2**31)))
    model = ict.InverseConv2dChain(3, 3, device="cuda", dtype=torch.float32, init_std=0.05)
    static_x = randn(rng, (4, 3, 32, 32), torch.float32, "cuda")
    params = list(model.parameters())

    def step():
        for p in params:
            if p.grad is not None:
                p.grad.zero_()
        z, logdet = model(static_x)
        loss = (0.5 * z.pow(2).sum((1, 2, 3)) - logdet).mean()
        loss.backward()
        return loss

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up (kernel compilation, allocator) off the default stream
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = step()

    for _ in range(2):
        static_x.copy_(randn(rng, static_x.shape, torch.float32, "cuda"))
        graph.replay()
        torch.cuda.synchronize()
        graph_loss, graph_grads = static_loss.clone(), [p.grad.clone() for p in params]
        eager_loss = step()
        torch.testing.assert_close(graph_loss, eager_loss.detach(), rtol=1e-5, atol=1e-5)
        for a, p in zip(graph_grads, params):
            torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-5)
