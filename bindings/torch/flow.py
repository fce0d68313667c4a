"""Normalizing-flow layers in the Inverse-Flow style: the data-to-latent pass is a solve,
sampling is a plain convolution.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from invconv_cupy.orientation import ORIENTATIONS, parse_orientation

from .ops import conv, solve


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return int(value)


def _kernel_size(value) -> tuple[int, int]:
    """``kernel_size`` as ``(KH, KW)``: an integer or a pair of integers, each at least 1."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise ValueError(f"kernel_size must be an integer or a pair (KH, KW), got {value!r}")
        return _positive_int("kernel_size[0]", value[0]), _positive_int("kernel_size[1]", value[1])
    size = _positive_int("kernel_size", value)
    return size, size


def _init_std(value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"init_std must be a real number, got {type(value).__name__} {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"init_std must be finite and at least 0, got {value}")
    return float(value)


def _dtype(value) -> torch.dtype:
    dtype = torch.get_default_dtype() if value is None else value
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {value!r}"
                        + (f" (torch's default dtype is {dtype})" if value is None else ""))
    return dtype


_EXTRA_STATE = "_extra_state"  # where nn.Module.state_dict keeps get_extra_state()


def _check_saved_orientations(module, state_dict, prefix, *args) -> None:
    """``load_state_dict`` pre-hook: check every saved orientation before any parameter is overwritten."""
    for name, layer in module.named_modules(prefix=prefix.rstrip(".")):
        key = f"{name}.{_EXTRA_STATE}" if name else _EXTRA_STATE
        if isinstance(layer, InverseConv2d) and key in state_dict:
            layer.set_extra_state(state_dict[key])


class InverseConv2d(nn.Module):
    """An invertible layer ``z = solve(x, W)`` with ``x = conv(z, W)`` for sampling.

    The effective weight ``W`` has the free parameter :attr:`weight` on every
    tap except the anchor tap, where it keeps only the strictly lower triangle
    (the entries the operator ignores, and the diagonal, are masked out and get
    zero gradient). The anchor diagonal is ``sign * exp(log_scale)``: never
    zero, so the layer is invertible for any parameter values, and
    ``log|det dz/dx| = -H * W * sum(log_scale)`` per image. Under
    ``torch.autocast`` both passes run in float32 (see :func:`.ops.conv`).

    Parameters
    ----------
    channels : int
        At least 1.
    kernel_size : int or (int, int)
        ``KH`` and ``KW``, each at least 1.
    orientation : {"TL", "TR", "BL", "BR"}
        The corner the convolution looks towards.
    init_std : float
        Standard deviation (at least 0) of the initial free weights; with
        ``log_scale = 0`` and ``sign = +1`` the layer starts near the identity
        (exactly the identity for ``init_std=0``).
    device, dtype
        Where and in which dtype (float32 or float64; ``None``: torch's default
        dtype) to create the parameters.

    Raises
    ------
    TypeError, ValueError
        At construction, for an argument of the wrong type or out of range
        (naming it); on ``load_state_dict``, for a state saved by a layer of
        another orientation (the orientation is saved in the state dict).

    Attributes
    ----------
    weight : Parameter, shape (C, C, KH, KW)
    log_scale : Parameter, shape (C,)
    sign : buffer, shape (C,)
        The anchor diagonal's signs, +1 at initialization (saved in the state dict).
    """

    def __init__(self, channels, kernel_size, orientation="TL", *, init_std=0.01, device=None, dtype=None):
        super().__init__()
        channels = _positive_int("channels", channels)
        kh, kw = _kernel_size(kernel_size)
        self.orientation = parse_orientation(orientation).name
        self.init_std = _init_std(init_std)
        factory = {"device": device, "dtype": _dtype(dtype)}
        self.weight = nn.Parameter(torch.empty(channels, channels, kh, kw, **factory))
        self.log_scale = nn.Parameter(torch.empty(channels, **factory))
        self.register_buffer("sign", torch.ones(channels, **factory))
        a, e = parse_orientation(orientation).anchor(kh, kw)
        mask = torch.ones(channels, channels, kh, kw, **factory)
        mask[:, :, a, e] = torch.ones(channels, channels, **factory).tril(-1)
        self.register_buffer("mask", mask, persistent=False)
        diagonal = torch.zeros(channels, channels, kh, kw, **factory)
        diagonal[:, :, a, e] = torch.eye(channels, **factory)
        self.register_buffer("anchor_diagonal", diagonal, persistent=False)
        self.register_load_state_dict_pre_hook(_check_saved_orientations)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Free weights ``N(0, init_std^2)``, ``log_scale = 0``: near the identity."""
        nn.init.normal_(self.weight, std=self.init_std)
        nn.init.zeros_(self.log_scale)

    def effective_weight(self) -> Tensor:
        """The weight the operator sees: masked free weights plus ``sign * exp(log_scale)`` on the anchor diagonal."""
        scale = (self.sign * self.log_scale.exp()).view(-1, 1, 1, 1)
        return torch.addcmul(self.weight * self.mask, self.anchor_diagonal, scale)

    def logdet(self, height: int, width: int) -> Tensor:
        """``log|det dz/dx|`` for one ``height x width`` image (a 0-d tensor)."""
        return self.log_scale.sum() * -(height * width)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Data to latent.

        Returns
        -------
        z : Tensor, shape (B, C, H, W)
            ``solve(x, W)``.
        logdet : Tensor, shape (B,)
            ``log|det dz/dx|`` of each image.
        """
        z = solve(x, self.effective_weight(), self.orientation)
        return z, self.logdet(*x.shape[-2:]).expand(x.shape[0]).clone()

    def inverse(self, z: Tensor) -> Tensor:
        """Latent to data: ``conv(z, W)``, a plain convolution (no solve)."""
        return conv(z, self.effective_weight(), self.orientation)

    def get_extra_state(self) -> dict:
        """The orientation, saved in the state dict beside the parameters."""
        return {"orientation": self.orientation}

    def set_extra_state(self, state: dict) -> None:
        """Raise ``ValueError`` unless ``state`` was saved by a layer of this orientation."""
        saved = state.get("orientation") if isinstance(state, dict) else None
        if saved != self.orientation:
            raise ValueError(
                f"the state was saved from an InverseConv2d with orientation {saved!r}; "
                f"this layer's orientation is {self.orientation!r}"
            )

    def extra_repr(self) -> str:
        c, _, kh, kw = self.weight.shape
        return f"{c}, kernel_size=({kh}, {kw}), orientation={self.orientation!r}"


class InverseConv2dChain(nn.Module):
    """:class:`InverseConv2d` layers chained over orientations (by default TL, TR, BL, BR, as in the paper).

    Each orientation only sees one quadrant of context; chained, every latent
    pixel depends on the whole image.

    Parameters
    ----------
    channels : int
    kernel_size : int or (int, int)
    orientations : sequence of {"TL", "TR", "BL", "BR"}
        Applied in this order by :meth:`forward`, in reverse by :meth:`inverse`.
    **kwargs
        Passed to every :class:`InverseConv2d` (``init_std``, ``device``, ``dtype``).

    Raises
    ------
    TypeError, ValueError
        As :class:`InverseConv2d`; also for ``orientations`` that is a string or
        empty.
    """

    def __init__(self, channels, kernel_size, orientations: Sequence[str] = ORIENTATIONS, **kwargs):
        super().__init__()
        if isinstance(orientations, str) or not isinstance(orientations, Sequence):
            raise TypeError(f"orientations must be a sequence of orientation names such as ('TL', 'BR'), "
                            f"got {orientations!r}")
        if len(orientations) == 0:
            raise ValueError("orientations must name at least one orientation")
        self.layers = nn.ModuleList(InverseConv2d(channels, kernel_size, o, **kwargs) for o in orientations)
        self.register_load_state_dict_pre_hook(_check_saved_orientations)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Data to latent through every layer; the log-determinants add up. Returns ``(z, logdet)``."""
        x, logdet = self.layers[0](x)
        for layer in self.layers[1:]:
            x, layer_logdet = layer(x)
            logdet = logdet + layer_logdet
        return x, logdet

    def inverse(self, z: Tensor) -> Tensor:
        """Latent to data: the layers' convolutions in reverse order."""
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z
