"""``invconv-flow evaluate``: test bits per dimension, mean and confidence interval over dequantization draws."""

from __future__ import annotations

import json
import math

import torch

from invconv_cupy.cli.errors import CliError

from . import checkpoint as ckpt
from . import data
from .device import torch_device
from .scoring import score


def run(args) -> None:
    """Score a checkpoint on held-out images; see ``invconv-flow evaluate --help``."""
    if args.draws < 1 or args.batch < 1:
        raise CliError(f"--draws and --batch must be at least 1, got {args.draws} and {args.batch}")
    if not 0 < args.confidence < 1:
        raise CliError(f"--confidence must be between 0 and 1, got {args.confidence}")
    checkpoint = ckpt.load(args.checkpoint)
    device = torch_device(args.device)
    levels = checkpoint["data"]["levels"]
    spec_name = args.data if args.data is not None else checkpoint["data"]["spec"]
    images = data.load_test(spec_name, levels, named=args.data is not None)
    model, spec = ckpt.restore_model(checkpoint, device)
    if tuple(images.shape[1:]) != spec.input_shape:
        raise CliError(f"{spec_name} holds {tuple(images.shape[1:])} images; the model takes {spec.input_shape}")
    result = score(model, images, levels, draws=args.draws, batch=args.batch,
                   generator=torch.Generator().manual_seed(args.seed), device=device)
    low, high = result.interval(args.confidence)
    summary = {"checkpoint": str(args.checkpoint), "data": spec_name, "model": spec.name, "images": len(images),
               "levels": levels, "draws": args.draws, "bpd": result.mean,
               "ci": None if math.isnan(low) else [low, high],
               "confidence": args.confidence, "draw_means": result.draw_means.tolist(), "step": checkpoint["step"]}
    if args.json:
        print(json.dumps(summary))
        return
    interval = "n/a for one image" if math.isnan(low) else f"{low:.4f} .. {high:.4f}"
    print(f"{spec.describe()}, step {checkpoint['step']}: test bpd {result.mean:.4f} on {spec_name} "
          f"({len(images)} images, {levels} levels); {args.confidence:.0%} CI {interval}; {args.draws} dequantization "
          f"draws, their means {result.draw_means.min():.4f} .. {result.draw_means.max():.4f}")
