"""InverseConv2d / nn.Conv2d on the CPU, measured in turn: the ratios of bench/test_torch_adapter.py, steadier.

pytest-benchmark times one group after another; on a shared VM whose speed
drifts by 2x within minutes, a ratio of two medians taken a minute apart says
as much about the drift as about the code. Here every round times a block of
calls of each workload in turn (ours, then the baseline), and a round's ratio
compares blocks taken seconds apart; the result is the median of the rounds'
ratios, with their range. Process CPU time, so time the VM gives to other
guests is not counted.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python bench/torch_step_ratios.py --json bench/results/torch-step-ratios/cpu.json

Workloads (``torch_workloads.py``), float32, 3x3 kernels: ``sample``
(``InverseConv2d.inverse`` / ``nn.Conv2d`` forward, goal <= 1.2) and ``train``
(forward+backward, goal <= 3). The output records what shapes the BLAS
underneath NumPy's solve: the OpenBLAS kernels in use and
``OPENBLAS_CORETYPE``, which can hold them below what the CPU supports.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from jsonfile import write_atomic
from torch_workloads import SHAPES, conv2d, environment, inputs, inverse_conv, sample_pass, training_step

GOALS = {"sample": 1.2, "train": 3.0}


def workloads(shape):
    """``{name: (ours, baseline)}``, each a no-argument callable on fresh inputs of ``shape``."""
    channels = shape[1]
    ours, baseline = inverse_conv(channels, "cpu"), conv2d(channels, "cpu")
    z, _ = inputs(shape, "cpu")
    x, g = inputs(shape, "cpu")
    x.requires_grad_()
    pairs = {"sample": [], "train": []}
    for model in (ours, baseline):
        sample, step = sample_pass(model), training_step(model)
        pairs["sample"].append(lambda sample=sample: sample(z))
        pairs["train"].append(lambda step=step: step(x, g))
    return {name: tuple(pair) for name, pair in pairs.items()}


def block_seconds(fn, calls: int) -> float:
    """Process CPU seconds per call over ``calls`` calls."""
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls


def calls_for(fn, target_s: float) -> int:
    """How many calls of ``fn`` take about ``target_s`` (at least 3), from the fastest of 3 single calls."""
    per_call = min(block_seconds(fn, 1) for _ in range(3))
    return max(3, round(target_s / max(per_call, 1e-7)))


def measure(ours, baseline, rounds: int, block_s: float) -> dict:
    """Medians of ours, the baseline and the per-round ratio, over ``rounds`` rounds taken in turn."""
    calls = calls_for(ours, block_s), calls_for(baseline, block_s)
    times = {"ours": [], "baseline": []}
    for _ in range(rounds):
        times["ours"].append(block_seconds(ours, calls[0]))
        times["baseline"].append(block_seconds(baseline, calls[1]))
    ratios = [a / b for a, b in zip(times["ours"], times["baseline"])]
    return {
        "ours_us": statistics.median(times["ours"]) * 1e6,
        "baseline_us": statistics.median(times["baseline"]) * 1e6,
        "ratio": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
        "calls_per_block": list(calls),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--shapes", nargs="+", default=["x".join(map(str, s)) for s in SHAPES],
                        help="B x C x H x W shapes such as 64x16x8x8 (default: both of the issue's)")
    parser.add_argument("--rounds", type=int, default=9, help="rounds per workload (default 9)")
    parser.add_argument("--block-seconds", type=float, default=0.2,
                        help="CPU seconds per block of calls (default 0.2)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.block_seconds <= 0:
        parser.error("--rounds must be at least 1 and --block-seconds positive")
    try:
        shapes = [tuple(int(n) for n in text.lower().split("x")) for text in args.shapes]
    except ValueError:
        parser.error(f"--shapes takes B x C x H x W such as 64x16x8x8, got {args.shapes}")
    if any(len(shape) != 4 or min(shape) < 1 for shape in shapes):
        parser.error(f"--shapes takes four positive sizes each, got {args.shapes}")

    results = {"environment": environment(), "rounds": args.rounds, "results": []}
    print(results["environment"])
    for shape in shapes:
        for name, (ours, baseline) in workloads(shape).items():
            row = {"shape": list(shape), "workload": name, "goal": GOALS[name], **measure(ours, baseline, args.rounds,
                                                                                          args.block_seconds)}
            results["results"].append(row)
            low, high = row["ratio_range"]
            print(f"{'x'.join(map(str, shape))} {name}: ours {row['ours_us']:.0f} us / nn.Conv2d "
                  f"{row['baseline_us']:.0f} us = {row['ratio']:.2f} (rounds {low:.2f}-{high:.2f}; goal "
                  f"{row['goal']})", flush=True)
    if args.json:
        write_atomic(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
