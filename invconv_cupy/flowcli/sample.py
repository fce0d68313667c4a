"""``invconv-flow sample``: draw images from a checkpoint's flow into a PNG grid."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch

from invconv_cupy.cli.errors import CliError
from invconv_cupy.cli.output import atomic_output
from invconv_cupy.torch.dequantization import quantize

from . import checkpoint as ckpt
from .device import torch_device


def grid(images: np.ndarray, columns: int, gap: int, zoom: int) -> np.ndarray:
    """uint8 images ``(N, C, H, W)`` as one ``(rows, columns)`` picture, ``gap`` white pixels around each.

    Returns an ``(H', W')`` array for grey images, ``(H', W', C)`` otherwise.
    """
    n, channels, height, width = images.shape
    rows = math.ceil(n / columns)
    height, width = height * zoom, width * zoom
    images = images.repeat(zoom, axis=2).repeat(zoom, axis=3)
    out = np.full((channels, gap + rows * (height + gap), gap + columns * (width + gap)), 255, np.uint8)
    for index, image in enumerate(images):
        r, c = divmod(index, columns)
        top, left = gap + r * (height + gap), gap + c * (width + gap)
        out[:, top : top + height, left : left + width] = image
    return out[0] if channels == 1 else out.transpose(1, 2, 0)


def _checked_output(args) -> Path:
    path = Path(args.output)
    if path.suffix.lower() != ".png":
        raise CliError(f"{path}: the grid is written as PNG; name a .png file")
    if path.is_dir():
        raise CliError(f"{path} is a folder; -o/--output names the .png file")
    if path.exists() and not args.force:
        raise CliError(f"{path} exists (use --force to overwrite)")
    return path


def run(args) -> None:
    """Draw ``--count`` images and write the grid; see ``invconv-flow sample --help``."""
    for name in ("count", "zoom"):
        if getattr(args, name) < 1:
            raise CliError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.gap < 0:
        raise CliError(f"--gap must be at least 0, got {args.gap}")
    if args.columns is not None and args.columns < 1:
        raise CliError(f"--columns must be at least 1, got {args.columns}")
    if not (math.isfinite(args.temperature) and args.temperature > 0):
        raise CliError(f"--temperature must be a positive number, got {args.temperature}")
    output = _checked_output(args)
    checkpoint = ckpt.load(args.checkpoint)
    if checkpoint["model"]["input_shape"][0] not in (1, 3):
        raise CliError(f"a PNG grid shows grey or RGB images; the model's have {checkpoint['model']['input_shape'][0]} "
                       "channels")
    device = torch_device(args.device)
    model, spec = ckpt.restore_model(checkpoint, device)
    levels = checkpoint["data"]["levels"]
    torch.manual_seed(args.seed)
    with torch.no_grad():
        u, _ = model.sample(args.count, temperature=args.temperature)
    finite = torch.isfinite(u.flatten(1)).all(dim=1)
    if not finite.all():
        print(f"{int((~finite).sum())} of {args.count} samples are not finite (drawn black)", file=sys.stderr)
    pixels = quantize(u.cpu(), levels).numpy()
    pixels[~finite.cpu().numpy()] = 0
    scaled = np.rint(pixels * (255 / (levels - 1))).astype(np.uint8)
    columns = args.columns or math.ceil(math.sqrt(args.count))
    picture = grid(scaled, columns, args.gap, args.zoom)
    from PIL import Image

    with atomic_output(output) as handle:
        Image.fromarray(picture).save(handle, format="PNG")
    print(f"{args.count} samples of {spec.describe()} (step {checkpoint['step']}, temperature {args.temperature}) "
          f"-> {output}")
