"""The README's Inverse-Flow bits-per-dimension table, in one run: invconv-flow train + evaluate for every cell.

For each dataset, seed and model it runs ``invconv-flow train`` (same budget and
architecture for every model) and ``invconv-flow evaluate --json``, then draws a
sample grid from seed 0's checkpoints and counts non-finite samples among
``--count-samples`` draws at temperature 1. Writes ``table.json``, the grids and
the logs to ``--out`` and prints the markdown table (mean and sample standard
deviation over the seeds, and each seed's value).

    OMP_NUM_THREADS=1 nice -n 10 python bench/flow_table.py --jobs 2

``--jobs 2`` trains the models of one (dataset, seed) side by side, so that a
change in the machine's load hits them alike. Checkpoints (``*.pt``) are not
meant for the repository.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ZOOM = {"digits": 4, "patches16": 2, "patches32": 1}


def _cli(*argv, log: Path) -> str:
    """Run ``invconv-flow argv`` in a fresh interpreter; its stdout (also appended to ``log``)."""
    result = subprocess.run([sys.executable, "-m", "invconv_cupy.flowcli", *map(str, argv)],
                            capture_output=True, text=True)
    with log.open("a") as handle:
        handle.write(f"$ invconv-flow {' '.join(map(str, argv))}\n{result.stdout}{result.stderr}\n")
    if result.returncode != 0:
        raise RuntimeError(f"invconv-flow {' '.join(map(str, argv))} failed ({result.returncode}): {result.stderr}")
    return result.stdout


def _cell(args, dataset: str, model: str, seed: int) -> dict:
    checkpoint = args.out / f"{dataset}-{model}-seed{seed}.pt"
    log = args.out / "logs" / f"{dataset}-{model}-seed{seed}.log"
    log.unlink(missing_ok=True)
    started = time.perf_counter()
    _cli("train", "--data", dataset, "--model", model, "-L", args.scales, "-K", args.depth, "--hidden", args.hidden,
         "--steps", args.steps, "--batch", args.batch, "--val-every", args.val_every, "--seed", seed,
         "--device", args.device, "-o", checkpoint, "--force", log=log)
    seconds = time.perf_counter() - started
    result = json.loads(_cli("evaluate", checkpoint, "--draws", args.draws, "--json", "--device", args.device,
                             log=log).splitlines()[-1])
    return {"dataset": dataset, "model": model, "seed": seed, "train_wall_seconds": seconds, **result}


def _non_finite_samples(checkpoint: Path, count: int) -> int:
    """Samples at temperature 1 with a NaN or infinite pixel, out of ``count``."""
    import torch

    from invconv_cupy.flowcli import checkpoint as ckpt

    model, _ = ckpt.restore_model(ckpt.load(checkpoint), torch.device("cpu"))
    torch.manual_seed(0)
    bad = 0
    with torch.no_grad():
        for start in range(0, count, 500):
            x, _ = model.sample(min(500, count - start))
            bad += int((~torch.isfinite(x.flatten(1)).all(dim=1)).sum())
    return bad


def _parameters(checkpoint: Path) -> int:
    import torch

    from invconv_cupy.flowcli import checkpoint as ckpt
    from invconv_cupy.flowcli.model import parameter_count

    model, _ = ckpt.restore_model(ckpt.load(checkpoint), torch.device("cpu"))
    return parameter_count(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "patches16", "patches32"])
    parser.add_argument("--models", nargs="+", default=["inverse_flow", "glow"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("-L", "--scales", type=int, default=2)
    parser.add_argument("-K", "--depth", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--val-every", type=int, default=100)
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--count-samples", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("bench/results/flows"))
    args = parser.parse_args()
    (args.out / "logs").mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    cells = []
    with ThreadPoolExecutor(args.jobs) as pool:
        for dataset in args.datasets:
            for seed in args.seeds:
                futures = [pool.submit(_cell, args, dataset, model, seed) for model in args.models]
                for future in futures:
                    cell = future.result()
                    cells.append(cell)
                    print(f"{dataset} {cell['model']} seed {seed}: test bpd {cell['bpd']:.4f} "
                          f"({cell['train_wall_seconds']:.0f} s training)", flush=True)
    extras = {}
    for dataset in args.datasets:
        for model in args.models:
            checkpoint = args.out / f"{dataset}-{model}-seed{args.seeds[0]}.pt"
            _cli("sample", checkpoint, "-o", args.out / f"{dataset}-{model}.png", "--count", 64, "--temperature", 0.7,
                 "--zoom", ZOOM.get(dataset, 1), "--force", "--device", args.device,
                 log=args.out / "logs" / "samples.log")
            extras[f"{dataset} {model}"] = {"parameters": _parameters(checkpoint),
                                            "non_finite_samples": _non_finite_samples(checkpoint, args.count_samples)}
    wall = time.perf_counter() - started
    report = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "wall_seconds": wall, "cells": cells, "models": extras}
    (args.out / "table.json").write_text(json.dumps(report, indent=1))

    print(f"\n{wall / 60:.1f} min in all; L={args.scales}, K={args.depth}, hidden {args.hidden}, {args.steps} steps of "
          f"batch {args.batch}, seeds {args.seeds}, {args.draws} dequantization draws\n")
    print("| data | model | parameters | test bpd, mean ± std over seeds | per seed | NaN/inf samples (T=1) |")
    print("| --- | --- | ---: | --- | --- | ---: |")
    for dataset in args.datasets:
        for model in args.models:
            values = [c["bpd"] for c in cells if c["dataset"] == dataset and c["model"] == model]
            spread = statistics.stdev(values) if len(values) > 1 else float("nan")
            extra = extras[f"{dataset} {model}"]
            print(f"| {dataset} | {model} | {extra['parameters']:,} | {statistics.mean(values):.4f} ± {spread:.4f} | "
                  f"{', '.join(f'{v:.4f}' for v in values)} | {extra['non_finite_samples']} / {args.count_samples} |")


if __name__ == "__main__":
    main()
