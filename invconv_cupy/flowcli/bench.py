"""``invconv-flow bench``: sampling and training-step times of inverse_flow, glow and solve_sampling_flow.

The three models are built alike (same ``L``, ``K``, hidden channels, seed) for
each image size. Every repeat times each model once in turn (sampling, then a
training step), so that a change in the machine's load hits all three alike;
the medians and their ratios are reported. A warm-up run of each comes first
(it also runs ActNorm's data-dependent initialization). On CUDA every timed
call ends with ``torch.cuda.synchronize()``.

``--profile`` adds where one sampling pass spends its time: in the inverse
convolutions (``InverseConvFlow``: ``conv``), in the solves
(``SolveSamplingFlow``), in the Glow steps (coupling, 1x1, ActNorm), and the rest
(priors, squeeze, split, logit).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch

from invconv_cupy.cli.errors import CliError
from invconv_cupy.cli.output import atomic_output

from .device import torch_device
from .model import MODELS, ModelSpec, parameter_count
from .train import DEFAULTS

PAPER_SIZES = (16, 32, 64, 128, 256)
CPU_SIZES = (16, 32)
BENCH_DEPTH = 16  # the paper's K


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> float:
    _synchronize(device)
    start = time.perf_counter()
    fn()
    _synchronize(device)
    return time.perf_counter() - start


def _out_of_memory_errors() -> tuple[type, ...]:
    errors = [torch.cuda.OutOfMemoryError, MemoryError]
    try:
        import cupy

        errors.append(cupy.cuda.memory.OutOfMemoryError)
    except ImportError:
        pass
    return tuple(errors)


class _Contender:
    """One model with its data and optimizer, and its sampling and training-step closures."""

    def __init__(self, spec: ModelSpec, batch: int, seed: int, device: torch.device):
        torch.manual_seed(seed)
        self.spec = spec
        self.model = spec.build().to(device)
        self.data = torch.rand(batch, *spec.input_shape, generator=torch.Generator().manual_seed(seed)).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.batch = batch
        self.times = {"sample": [], "train_step": []}

    def sample(self) -> None:
        with torch.no_grad():
            self.model.sample(self.batch)

    def train_step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        (-self.model.log_prob(self.data, None).mean()).backward()
        self.optimizer.step()


def _sampling_profile(contender: _Contender, device: torch.device) -> dict:
    """Seconds of one sampling pass by layer kind (forward hooks; synchronizes on CUDA)."""
    from invconv_cupy.torch.flows import GlowStep, InverseConvFlow, SolveSamplingFlow

    kinds = {InverseConvFlow: "inverse convolutions (conv)", SolveSamplingFlow: "solves",
             GlowStep: "Glow steps (coupling, 1x1, ActNorm)"}
    spent, starts, handles = defaultdict(float), {}, []

    def before(module, _):
        _synchronize(device)
        starts[module] = time.perf_counter()

    def after(module, _, __):
        _synchronize(device)
        spent[kinds[type(module)]] += time.perf_counter() - starts.pop(module)

    for module in contender.model.modules():
        if type(module) in kinds:
            handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        total = _timed(contender.sample, device)
    finally:
        for handle in handles:
            handle.remove()
    return {**spent, "rest (priors, squeeze, split, logit)": total - sum(spent.values()), "total": total}


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.get_num_threads()} threads"


def _checked(args, device: torch.device) -> tuple[list[int], dict]:
    """The sizes and the builders' arguments, every number checked before any time is spent."""
    sizes = args.sizes or list(PAPER_SIZES if device.type == "cuda" else CPU_SIZES)
    given = {"batch": args.batch, "channels": args.channels, "repeats": args.repeats, "scales": args.scales,
             "depth": args.depth, "hidden": args.hidden, "kernel-size": args.kernel_size}
    for name, value in [*given.items(), *(("sizes", s) for s in sizes)]:
        if value is not None and value < 1:
            raise CliError(f"--{name} must be at least 1, got {value}")
    architecture = {
        "levels": args.scales or DEFAULTS["scales"],
        "steps": args.depth or BENCH_DEPTH,
        "hidden": args.hidden or DEFAULTS["hidden"],
        "kernel_size": args.kernel_size or DEFAULTS["kernel_size"],
    }
    for size in sizes:  # the builders' own shape check
        ModelSpec("glow", (args.channels, size, size), architecture["levels"], 1, 1, 1).build()
    if args.json is not None:
        path = Path(args.json)
        if path.is_dir():
            raise CliError(f"{path} is a folder; --json names a file")
        if path.exists() and not args.force:
            raise CliError(f"{path} exists (use --force to overwrite)")
    return sizes, architecture


def _median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3


def run(args) -> None:
    """Time the three models at each size; see ``invconv-flow bench --help``."""
    device = torch_device(args.device)
    sizes, architecture = _checked(args, device)
    print(f"{_machine(device)}; batch {args.batch}, {args.channels} channels, L={architecture['levels']}, "
          f"K={architecture['steps']}, hidden {architecture['hidden']}, kernel {architecture['kernel_size']}; "
          f"median of {args.repeats} runs (ms)", flush=True)
    print(f"{'size':>5} {'model':<20} {'parameters':>10} {'sample':>9} {'train step':>11}")
    results = []
    for size in sizes:
        shape = (args.channels, size, size)
        try:
            contenders = [_Contender(ModelSpec(name, shape, **architecture), args.batch, args.seed, device)
                          for name in MODELS]
            for contender in contenders:  # warm-up; initializes ActNorm from the data
                contender.train_step()
                contender.sample()
            for _ in range(args.repeats):
                for kind in ("sample", "train_step"):
                    for contender in contenders:
                        contender.times[kind].append(_timed(getattr(contender, kind), device))
            profiles = {c.spec.name: _sampling_profile(c, device) for c in contenders} if args.profile else None
        except _out_of_memory_errors() as exc:
            print(f"{size:>5} out of memory on {device} ({type(exc).__name__}); larger sizes skipped", flush=True)
            break
        entry = {"size": size, "models": {}}
        for c in contenders:
            entry["models"][c.spec.name] = {"parameters": parameter_count(c.model), **c.times}
            print(f"{size:>5} {c.spec.name:<20} {parameter_count(c.model):>10,} {_median_ms(c.times['sample']):>9.1f} "
                  f"{_median_ms(c.times['train_step']):>11.1f}", flush=True)
        medians = {c.spec.name: {k: statistics.median(v) for k, v in c.times.items()} for c in contenders}
        entry["ratios"] = {
            "sample inverse_flow/glow": medians["inverse_flow"]["sample"] / medians["glow"]["sample"],
            "sample inverse_flow/solve_sampling_flow":
                medians["inverse_flow"]["sample"] / medians["solve_sampling_flow"]["sample"],
            "train_step inverse_flow/glow": medians["inverse_flow"]["train_step"] / medians["glow"]["train_step"],
        }
        print("      ratios: " + ", ".join(f"{name} {value:.2f}" for name, value in entry["ratios"].items()))
        if profiles:
            entry["sampling_profile"] = profiles
            for name, parts in profiles.items():
                print(f"      one sampling pass of {name}: " + ", ".join(
                    f"{part} {seconds * 1e3:.1f} ms" for part, seconds in parts.items()))
        results.append(entry)
        del contenders
    if args.json is not None:
        report = {"machine": _machine(device), "device": str(device), "date": datetime.datetime.now().isoformat(),
                  "batch": args.batch, "channels": args.channels, "repeats": args.repeats, "seed": args.seed,
                  **architecture, "results": results}
        with atomic_output(Path(args.json)) as handle:
            handle.write(json.dumps(report, indent=1).encode())
