"""DistributedDataParallel over gloo on the CPU: 2 processes, gradients equal one process's.

Each rank trains the same InverseConv2dChain on half of the batch for two SGD
steps; DDP averages the gradients, which must equal the gradients of the whole
batch in a single process. Rendezvous through a file in tmp_path (no network);
every wait is bounded.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from torch_cases import torch

import invconv_cupy.torch as ict

WORLD, BATCH, STEPS = 2, 4, 2

_WORKER = r"""
import sys
from datetime import timedelta
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
sys.path.insert(0, sys.argv[4])
from test_torch_ddp import train

rank, world = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method="file://" + sys.argv[3], rank=rank, world_size=world,
                        timeout=timedelta(seconds=60))
grads = train(lambda model: DistributedDataParallel(model), int(sys.argv[5]), rank, world)
torch.save(grads, sys.argv[6])
dist.destroy_process_group()
"""


def train(wrap, seed, rank=0, world=1):
    """Two SGD steps on this rank's share of a fixed batch; returns each step's gradients."""
    torch.manual_seed(seed)
    model = ict.InverseConv2dChain(2, 3, dtype=torch.float64, init_std=0.1)
    x = torch.randn(BATCH, 2, 5, 4, dtype=torch.float64)
    share = x[rank * BATCH // world : (rank + 1) * BATCH // world]
    net = wrap(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    grads = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        z, logdet = net(share)
        (0.5 * z.pow(2).sum((1, 2, 3)) - logdet).mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        optimizer.step()
    return grads


def test_ddp_gradients_match_a_single_process(rng, tmp_path):
    seed = int(rng.integers(2**31))
    outputs = [tmp_path / f"grads{rank}.pt" for rank in range(WORLD)]
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(rank), str(WORLD), str(tmp_path / "rendezvous"),
             str(Path(__file__).parent), str(seed), str(outputs[rank])],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for rank in range(WORLD)
    ]
    try:
        logs = [worker.communicate(timeout=120)[0] for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    for worker, log in zip(workers, logs):
        assert worker.returncode == 0, log

    expected = train(lambda model: model, seed)
    for output in outputs:
        got = torch.load(output)
        assert len(got) == STEPS
        for step_got, step_expected in zip(got, expected):
            for a, b in zip(step_got, step_expected):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
