"""``invconv-flow`` checkpoints: the model's and training's configuration with the weights and training state.

A checkpoint is a ``torch.save`` dict (read back with ``weights_only=True``):

- ``format``: :data:`FORMAT`;
- ``model``: :meth:`ModelSpec.as_dict` (how to rebuild the flow);
- ``data``: ``{"spec", "levels", "val_fraction"}``;
- ``train``: ``{"steps", "batch", "lr", "seed", "val_every"}`` (``steps``: the target);
- ``step``: optimizer steps done; ``history``: one dict per validation
  (``step``, ``train_bpd``, ``val_bpd``, ``seconds``);
- ``state``, ``optimizer``, ``generator``: the model's and Adam's state dicts and
  the batch and noise generator's state, so that a resumed run continues exactly.

It is written to a temporary file beside the target and renamed into place.
"""

from __future__ import annotations

from pathlib import Path

import torch

from invconv_cupy.cli.errors import CliError
from invconv_cupy.cli.output import atomic_output

from .model import ModelSpec

FORMAT = "invconv-flow checkpoint 1"


def save(path: Path, checkpoint: dict) -> None:
    """Write ``checkpoint`` (see the module's docstring) to ``path`` atomically."""
    with atomic_output(path) as handle:
        torch.save({"format": FORMAT, **checkpoint}, handle)


def load(path: str | Path) -> dict:
    """Read a checkpoint written by :func:`save` (tensors on the CPU).

    Raises
    ------
    CliError
        For a missing or unreadable file or one that is not an ``invconv-flow`` checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CliError(f"checkpoint {path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling fails in many ways; each means "not readable"
        raise CliError(f"cannot read checkpoint {path}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CliError(f"{path} is not an invconv-flow checkpoint (written by 'invconv-flow train')")
    return checkpoint


def restore_model(checkpoint: dict, device: torch.device):
    """The checkpoint's flow with its weights, on ``device``, in eval mode; and its :class:`ModelSpec`."""
    spec = ModelSpec.from_dict(checkpoint["model"])
    model = spec.build()
    model.load_state_dict(checkpoint["state"])
    return model.to(device).eval(), spec
