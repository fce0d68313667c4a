"""Normalizing-flow layers in the Inverse-Flow style: the data-to-latent pass is a solve,
sampling is a plain convolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from invconv_cupy.orientation import ORIENTATIONS, parse_orientation

from .ops import conv, solve


class InverseConv2d(nn.Module):
    """An invertible layer ``z = solve(x, W)`` with ``x = conv(z, W)`` for sampling.

    The effective weight ``W`` has the free parameter :attr:`weight` on every
    tap except the anchor tap, where it keeps only the strictly lower triangle
    (the entries the operator ignores, and the diagonal, are masked out and get
    zero gradient). The anchor diagonal is ``sign * exp(log_scale)``: never
    zero, so the layer is invertible for any parameter values, and
    ``log|det dz/dx| = -H * W * sum(log_scale)`` per image.

    Parameters
    ----------
    channels : int
    kernel_size : int or (int, int)
    orientation : {"TL", "TR", "BL", "BR"}
        The corner the convolution looks towards.
    init_std : float
        Standard deviation of the initial free weights; with ``log_scale = 0``
        and ``sign = +1`` the layer starts near the identity (exactly the
        identity for ``init_std=0``).
    device, dtype
        Where and in which dtype (float32 or float64) to create the parameters.

    Attributes
    ----------
    weight : Parameter, shape (C, C, KH, KW)
    log_scale : Parameter, shape (C,)
    sign : buffer, shape (C,)
        The anchor diagonal's signs, +1 at initialization (saved in the state dict).
    """

    def __init__(self, channels, kernel_size, orientation="TL", *, init_std=0.01, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        kh, kw = _pair(kernel_size)
        self.orientation = parse_orientation(orientation).name
        self.init_std = init_std
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
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Free weights ``N(0, init_std^2)``, ``log_scale = 0``: near the identity."""
        nn.init.normal_(self.weight, std=self.init_std)
        nn.init.zeros_(self.log_scale)

    def effective_weight(self) -> Tensor:
        """The weight the operator sees: masked free weights plus ``sign * exp(log_scale)`` on the anchor diagonal."""
        scale = (self.sign * self.log_scale.exp()).view(-1, 1, 1, 1)
        return self.weight * self.mask + self.anchor_diagonal * scale

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
    """

    def __init__(self, channels, kernel_size, orientations: Sequence[str] = ORIENTATIONS, **kwargs):
        super().__init__()
        if len(orientations) == 0:
            raise ValueError("orientations must name at least one orientation")
        self.layers = nn.ModuleList(InverseConv2d(channels, kernel_size, o, **kwargs) for o in orientations)

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
