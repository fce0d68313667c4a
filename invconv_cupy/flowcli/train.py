"""``invconv-flow train``: maximum likelihood on dequantized images, Adam, validation and checkpoints.

Each step draws a batch uniformly at random (with replacement) from the
training images, dequantizes it with fresh noise and takes one Adam step on the
mean negative log-likelihood. Batches and noise come from one CPU generator
seeded by ``--seed`` (the model's initialization from torch's global RNG, seeded
the same), so a run is reproducible and a resumed run continues exactly where
the checkpoint left off.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from invconv_cupy.cli.errors import CliError
from invconv_cupy.torch.dequantization import bits_per_dim, dequantize

from . import checkpoint as ckpt
from . import data
from .device import torch_device
from .model import ModelSpec, parameter_count
from .scoring import score

_VAL_SEED = 0  # validation noise is the same at every validation, so its bpd values are comparable

#: Defaults of ``train``'s options; a resumed run takes them from its checkpoint instead.
DEFAULTS = {"model": "inverse_flow", "scales": 2, "depth": 4, "hidden": 64, "kernel_size": 3, "steps": 500,
            "batch": 100, "lr": 1e-3, "val_every": 100, "val_fraction": 0.1, "seed": 0}
#: Options a checkpoint fixes: giving one with ``--resume`` is an error.
FIXED_BY_CHECKPOINT = ("data", "levels", "model", "scales", "depth", "hidden", "kernel_size", "batch", "lr",
                       "val_every", "val_fraction", "seed")


def _new_run(args) -> tuple[dict, data.Dataset]:
    """A fresh run's configuration (checked) and its data."""
    if args.data is None:
        raise CliError("train needs --data (or --resume CHECKPOINT)")
    if args.data in data.BUILTIN and args.val_fraction is not None:
        raise CliError(f"--val-fraction applies to your own data; {args.data} has its own validation split")
    for name, value in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    _check_numbers(args)
    dataset = data.load(args.data, levels=args.levels, val_fraction=args.val_fraction)
    spec = ModelSpec(args.model, dataset.shape, args.scales, args.depth, args.hidden, args.kernel_size)
    config = {
        "model": spec.as_dict(),
        "data": {"spec": args.data, "levels": dataset.levels, "val_fraction": args.val_fraction},
        "train": {"steps": args.steps, "batch": args.batch, "lr": args.lr, "seed": args.seed,
                  "val_every": args.val_every},
    }
    return config, dataset


def _resumed_run(args, previous: dict) -> tuple[dict, data.Dataset]:
    """A resumed run's configuration: the checkpoint's, with the new ``--steps`` target."""
    given = [name for name in FIXED_BY_CHECKPOINT if getattr(args, name) is not None]
    if given:
        raise CliError(f"--{given[0].replace('_', '-')} cannot be given with --resume: the checkpoint fixes it")
    _check_numbers(args)
    config = {key: previous[key] for key in ("model", "data", "train")}
    if args.steps is not None:
        if args.steps < previous["step"]:
            raise CliError(f"--steps {args.steps} is below the {previous['step']} steps the checkpoint has done")
        config["train"] = {**config["train"], "steps": args.steps}
    stored = config["data"]
    dataset = data.load(stored["spec"], levels=None if stored["spec"] in data.BUILTIN else stored["levels"],
                        val_fraction=stored["val_fraction"])
    if dataset.shape != tuple(config["model"]["input_shape"]):
        raise CliError(f"{stored['spec']} now holds {dataset.shape} images, the checkpoint's model "
                       f"{tuple(config['model']['input_shape'])}")
    return config, dataset


def _output_path(args) -> Path:
    if args.output is None:
        if args.resume is None:
            raise CliError("train needs -o/--output CHECKPOINT (or --resume CHECKPOINT)")
        return Path(args.resume)
    path = Path(args.output)
    if path.exists() and not args.force and (args.resume is None or path.resolve() != Path(args.resume).resolve()):
        raise CliError(f"{path} exists (use --force to overwrite)")
    if path.is_dir():
        raise CliError(f"{path} is a folder; -o/--output names the checkpoint file")
    return path


def _check_numbers(args) -> None:
    for name in ("steps", "batch", "val_every", "scales", "depth", "hidden", "kernel_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CliError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise CliError(f"--lr must be a positive number, got {args.lr}")


def _progress(total: int, initial: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", file=sys.stderr, dynamic_ncols=True,
                disable=None)  # None: no bar when stderr is not a terminal


def run(args) -> None:
    """Train (or resume) a flow and write its checkpoint; see ``invconv-flow train --help``."""
    previous = ckpt.load(args.resume) if args.resume is not None else None
    output = _output_path(args)
    device = torch_device(args.device)
    config, dataset = _resumed_run(args, previous) if previous else _new_run(args)
    train = config["train"]
    levels = config["data"]["levels"]

    torch.manual_seed(train["seed"])
    spec = ModelSpec.from_dict(config["model"])
    model = spec.build().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=train["lr"])
    generator = torch.Generator().manual_seed(train["seed"])
    history, step, saved = [], 0, None
    if previous:
        model.load_state_dict(previous["state"])
        optimizer.load_state_dict(previous["optimizer"])
        generator.set_state(previous["generator"])
        history, step, saved = list(previous["history"]), previous["step"], (args.resume, previous["step"])

    images = torch.from_numpy(dataset.train)
    dims = int(np.prod(dataset.shape))
    print(f"{spec.describe()}: {parameter_count(model):,} parameters; {dataset.name}: {len(dataset.train)} train, "
          f"{len(dataset.val)} validation images, {levels} levels; device {device}", flush=True)

    def validate(train_bpd: float, started: float) -> None:
        nonlocal saved
        elapsed = time.perf_counter() - started + (history[-1]["seconds"] if history else 0.0)
        val = score(model, dataset.val, levels, generator=torch.Generator().manual_seed(_VAL_SEED), device=device)
        history.append({"step": step, "train_bpd": train_bpd, "val_bpd": val.mean, "seconds": elapsed})
        ckpt.save(output, {**config, "step": step, "history": history, "state": model.state_dict(),
                           "optimizer": optimizer.state_dict(), "generator": generator.get_state()})
        saved = (output, step)

    started = time.perf_counter()
    running = math.nan
    model.train()
    with _progress(train["steps"], step) as bar:
        while step < train["steps"]:
            batch = images[torch.randint(len(images), (train["batch"],), generator=generator)]
            u = dequantize(batch, levels, generator).to(device)
            loss = -model.log_prob(u, None).mean()
            if not torch.isfinite(loss):
                kept = f"{saved[0]} holds step {saved[1]}" if saved else "no checkpoint was written"
                raise CliError(f"training diverged at step {step + 1} (loss {loss.item()}); {kept}; "
                               "try a lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            batch_bpd = float(bits_per_dim(-loss.detach(), dims, levels))
            running = batch_bpd if math.isnan(running) else 0.95 * running + 0.05 * batch_bpd
            bar.update(1)
            bar.set_postfix(bpd=f"{running:.3f}", val=f"{history[-1]['val_bpd']:.3f}" if history else "-")
            if step % train["val_every"] == 0 or step == train["steps"]:
                model.eval()
                validate(running, started)
                started = time.perf_counter()
                model.train()
                bar.set_postfix(bpd=f"{running:.3f}", val=f"{history[-1]['val_bpd']:.3f}")
                bar.write(f"step {step}: train bpd {running:.4f} (moving average), validation bpd "
                          f"{history[-1]['val_bpd']:.4f}", file=sys.stdout)
    if previous and step == previous["step"]:
        print(f"nothing to do: the checkpoint has done {step} of {train['steps']} steps (raise --steps)")
        return
    print(f"done: {step} steps, {history[-1]['seconds']:.1f} s of training (validation not counted); "
          f"checkpoint {output}", flush=True)
