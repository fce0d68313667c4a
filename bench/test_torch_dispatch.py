"""The eager path against the dispatcher path of the same op, on a tiny problem where overhead dominates.

``invconv_cupy.torch.solve`` in plain eager mode runs a ``torch.autograd.Function``;
``torch.ops.invconv_cupy.solve`` goes through the ``torch.library`` custom op
(what ``torch.compile`` uses). Same work underneath: the ratio is the overhead saved.

    python -m pytest bench/test_torch_dispatch.py --benchmark-enable
"""

import pytest
import torch

import invconv_cupy.torch as ict

GPU = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
DEVICES = ["cpu", pytest.param("cuda", marks=GPU)]
PATHS = {"ours": ict.solve, "dispatcher (custom op)": torch.ops.invconv_cupy.solve}


@pytest.mark.parametrize("role", PATHS)
@pytest.mark.parametrize("device", DEVICES)
def test_solve_forward_backward(benchmark, device, role):
    solve = PATHS[role]
    w = torch.zeros(2, 2, 2, 2, device=device)
    w[0, 0, 1, 1] = w[1, 1, 1, 1] = 1.0
    w.requires_grad_()
    y = torch.randn(1, 2, 4, 4, device=device, requires_grad=True)
    benchmark.group = f"torch solve forward+backward 1x2x4x4 k2, {device}: eager path vs custom op"
    benchmark.extra_info["role"] = role

    def step():
        solve(y, w, "TL").sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()

    benchmark.pedantic(step, rounds=300, warmup_rounds=20, iterations=1)
