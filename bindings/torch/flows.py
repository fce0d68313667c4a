"""Inverse-Flow: multi-scale normalizing flows built on ``normflows`` around the inverse convolution.

Needs the ``flows`` extra (``pip install "invconv-cupy[flows]"``: ``normflows``).

``normflows``' conventions: a :class:`normflows.flows.Flow`'s ``forward`` maps
latent to data (sampling) and returns ``log|det dx/dz|``; its ``inverse`` maps
data to latent (density) and returns ``log|det dz/dx|``.

- :class:`InverseConvFlow`: the paper's layer. Density is ``solve`` (the inverse
  of a causal convolution), sampling is a plain ``conv``.
- :class:`SolveSamplingFlow`: the roles swapped (the FInC Flow / Emerging
  convolution placement): density by ``conv``, sampling by ``solve``.
- :class:`BoundedAffineCoupling`, :class:`GlowStep`: normflows' Glow block with a
  coupling scale ``exp(b * tanh(s / b))``, bounded on both sides, so neither
  direction can divide by a vanishing number (normflows' ``sigmoid`` scale map
  divides by ``sigmoid(s + 2)`` at sampling, which gave NaN samples about once
  in 10,000).
- Builders returning a :class:`normflows.MultiscaleFlow`: :func:`inverse_flow`,
  :func:`glow`, :func:`solve_sampling_flow`. Everything else in them (squeeze,
  split, ActNorm, invertible 1x1 convolution, the coupling's network, the
  Gaussian priors, the logit preprocessing) is normflows' own.

A model maps images in ``[0, 1)`` (dequantized data, see
:mod:`invconv_cupy.torch.dequantization`) through the logit preprocessing
(``normflows.transforms.Logit``, whose log-determinant ``log_prob`` includes), so
``model.log_prob(u)`` is the density of ``u`` itself.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

try:
    import normflows as nf
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        'invconv_cupy.torch.flows needs normflows: pip install "invconv-cupy[flows]" (or pip install normflows)'
    ) from exc

from invconv_cupy.orientation import ORIENTATIONS

from .flow import InverseConv2d

__all__ = [
    "InverseConvFlow",
    "SolveSamplingFlow",
    "BoundedAffineCoupling",
    "GlowStep",
    "inverse_flow",
    "glow",
    "solve_sampling_flow",
]


class InverseConvFlow(nf.flows.Flow):
    """:class:`~invconv_cupy.torch.InverseConv2d` as a normflows ``Flow``: sampling by ``conv``, density by ``solve``.

    Parameters
    ----------
    channels : int
    kernel_size : int or (int, int)
    orientation : {"TL", "TR", "BL", "BR"}
    **kwargs
        Passed to :class:`~invconv_cupy.torch.InverseConv2d` (``init_std``, ``device``, ``dtype``).

    Attributes
    ----------
    layer : InverseConv2d
        The parameters: the free weights and the learned anchor diagonal
        ``sign * exp(log_scale)``.
    """

    def __init__(self, channels, kernel_size=3, orientation="TL", **kwargs):
        super().__init__()
        self.layer = InverseConv2d(channels, kernel_size, orientation, **kwargs)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Latent to data, ``x = conv(z, W)``; returns ``(x, log|det dx/dz|)``, the latter of shape (B,)."""
        logdet = -self.layer.logdet(*z.shape[-2:])
        return self.layer.inverse(z), logdet.expand(z.shape[0])

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Data to latent, ``z = solve(x, W)``; returns ``(z, log|det dz/dx|)``, the latter of shape (B,)."""
        return self.layer(x)


class SolveSamplingFlow(nf.flows.Reverse):
    """:class:`InverseConvFlow` with its directions swapped: density by ``conv``, sampling by ``solve``.

    The placement of FInC Flow's and Emerging convolutions' layers, for
    comparison: training needs no solve, but sampling does. Same parameters as
    :class:`InverseConvFlow` (``self.flow.layer``).
    """

    def __init__(self, channels, kernel_size=3, orientation="TL", **kwargs):
        super().__init__(InverseConvFlow(channels, kernel_size, orientation, **kwargs))


class BoundedAffineCoupling(nf.flows.AffineCoupling):
    """normflows' affine coupling with the scale ``exp(bound * tanh(s / bound))``.

    Sampling computes ``z2 * scale + shift`` and density ``(z2 - shift) / scale``
    with ``scale`` in ``[exp(-bound), exp(bound)]``, so no direction can divide
    by a vanishing number or overflow. Near ``s = 0`` it is ``exp(s)`` (RealNVP's
    map), and the network's zero-initialized last layer makes the coupling start
    as the identity.

    Parameters
    ----------
    param_map : torch.nn.Module
        Maps ``z1`` to the interleaved (shift, raw log-scale) channels, as in
        :class:`normflows.flows.AffineCoupling`.
    bound : float
        The largest ``|log scale|``.
    """

    def __init__(self, param_map, bound=2.0):
        if not bound > 0:
            raise ValueError(f"bound must be positive, got {bound!r}")
        super().__init__(param_map, scale=True, scale_map="exp")
        self.scale_map = "bounded_exp"
        self.bound = float(bound)

    def _shift_and_log_scale(self, z1: Tensor) -> tuple[Tensor, Tensor]:
        param = self.param_map(z1)
        return param[:, 0::2], self.bound * torch.tanh(param[:, 1::2] / self.bound)

    def forward(self, z):
        """Latent to data: ``[z1, z2] -> [z1, z2 * scale + shift]``; returns the pair and ``log|det|``."""
        z1, z2 = z
        shift, log_scale = self._shift_and_log_scale(z1)
        return [z1, z2 * log_scale.exp() + shift], log_scale.sum(dim=(1, 2, 3))

    def inverse(self, z):
        """Data to latent: ``[z1, z2] -> [z1, (z2 - shift) / scale]``; returns the pair and ``log|det|``."""
        z1, z2 = z
        shift, log_scale = self._shift_and_log_scale(z1)
        return [z1, (z2 - shift) * (-log_scale).exp()], -log_scale.sum(dim=(1, 2, 3))

    def extra_repr(self) -> str:
        return f"bound={self.bound}"


class GlowStep(nf.flows.GlowBlock):
    """normflows' ``GlowBlock`` (coupling, invertible 1x1 convolution, ActNorm) with :class:`BoundedAffineCoupling`.

    Data to latent it runs ActNorm, the 1x1 convolution (LU-parameterized),
    then the channel-split affine coupling whose network is normflows'
    ``ConvNet2d`` (3x3, 1x1, 3x3 convolutions, ``hidden`` channels, last layer
    zero-initialized).

    Parameters
    ----------
    channels : int
        At least 2 (the coupling splits the channels).
    hidden : int
        Channels of the coupling network's hidden layers.
    bound : float
        The coupling's largest ``|log scale|``.
    """

    def __init__(self, channels, hidden, bound=2.0):
        with warnings.catch_warnings():
            # normflows' Invertible1x1Conv calls Tensor.lu, which torch deprecates; nothing a user can act on.
            warnings.filterwarnings("ignore", message="torch.lu is deprecated", category=UserWarning)
            super().__init__(channels, hidden, scale=True, scale_map="exp", split_mode="channel", use_lu=True)
        coupling_block = self.flows[0]
        # GlowBlock has no hook for another scale map: swap the coupling, keep its network.
        coupling_block.flows[1] = BoundedAffineCoupling(coupling_block.flows[1].param_map, bound)


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _checked_shape(input_shape, levels: int) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (channels, height, width), got {input_shape!r}")
    for name, value in zip(("channels", "height", "width"), shape):
        _positive_int(f"input_shape's {name}", value)
    channels, height, width = shape
    if height % 2**levels or width % 2**levels:
        raise ValueError(
            f"input_shape's height and width must be multiples of 2**levels = {2**levels} "
            f"(each level squeezes 2x2 pixels into channels), got {height}x{width}"
        )
    return channels, height, width


def _multiscale(
    input_shape, levels, steps, hidden, extra: Callable[[int, int], nf.flows.Flow] | None, logit_alpha, bound
) -> nf.MultiscaleFlow:
    """``[squeeze, steps x (extra, GlowStep), split] x (levels - 1)``, then squeeze and steps, in data-to-latent order.

    ``extra(channels, k)`` makes the layer that runs first in step ``k`` of a level (data to latent).
    normflows lists a level's flows latent to data and its levels deepest first.
    """
    levels = _positive_int("levels", levels)
    steps = _positive_int("steps", steps)
    hidden = _positive_int("hidden", hidden)
    if not 0 < logit_alpha < 0.5:
        raise ValueError(f"logit_alpha must be in (0, 0.5), got {logit_alpha!r}")
    channels, height, width = _checked_shape(input_shape, levels)
    flows, merges, priors = [], [], []
    for i in range(levels):
        depth = levels - 1 - i  # 0 at full resolution
        level_channels = channels * 2 ** (depth + 2)
        level = []
        for k in reversed(range(steps)):  # listed latent to data: step 0 (data to latent) comes last
            level.append(GlowStep(level_channels, hidden, bound))
            if extra is not None:
                level.append(extra(level_channels, k))
        level.append(nf.flows.Squeeze())
        flows.append(level)
        size = (height // 2 ** (depth + 1), width // 2 ** (depth + 1))
        if i == 0:
            priors.append(nf.distributions.DiagGaussian((level_channels, *size)))
        else:
            merges.append(nf.flows.Merge())
            priors.append(nf.distributions.DiagGaussian((level_channels // 2, *size)))
    return nf.MultiscaleFlow(priors, flows, merges, transform=nf.transforms.Logit(logit_alpha), class_cond=False)


def _cycling(layer_class, kernel_size) -> Callable[[int, int], nf.flows.Flow]:
    """Data to latent, a level's steps get orientations TL, TR, BL, BR, TL, ... (the paper's cycle)."""
    return lambda channels, k: layer_class(channels, kernel_size, ORIENTATIONS[k % len(ORIENTATIONS)])


def inverse_flow(
    input_shape, levels=2, steps=16, hidden=64, kernel_size=3, *, logit_alpha=0.05, coupling_bound=2.0
) -> nf.MultiscaleFlow:
    """The paper's Inverse-Flow: each step is inverse convolution, ActNorm, 1x1 convolution, affine coupling.

    Data to latent: logit, then ``[squeeze, steps x step, split] x (levels - 1)``,
    then squeeze, ``steps x step``, into diagonal Gaussian priors (one per
    level). The inverse convolutions (:class:`InverseConvFlow`) cycle through
    the orientations TL, TR, BL, BR; sampling runs only convolutions.

    Parameters
    ----------
    input_shape : (int, int, int)
        ``(channels, height, width)``; height and width multiples of ``2**levels``.
    levels : int
        ``L``, the number of scales (the paper: 2).
    steps : int
        ``K``, steps per level (the paper: 16).
    hidden : int
        Hidden channels of each coupling's network.
    kernel_size : int or (int, int)
        The inverse convolutions' kernel.
    logit_alpha : float
        The logit preprocessing ``logit(alpha + (1 - 2 alpha) u)``; its
        log-determinant is part of ``log_prob``.
    coupling_bound : float
        The couplings' largest ``|log scale|`` (:class:`BoundedAffineCoupling`).

    Returns
    -------
    normflows.MultiscaleFlow
        ``log_prob(u)`` is the log-density of images ``u`` in ``[0, 1)``,
        ``sample(n, temperature=...)`` draws images.

    Raises
    ------
    ValueError
        For a shape that does not split into ``levels`` scales or a non-positive size.
    """
    return _multiscale(
        input_shape, levels, steps, hidden, _cycling(InverseConvFlow, kernel_size), logit_alpha, coupling_bound
    )


def glow(input_shape, levels=2, steps=16, hidden=64, *, logit_alpha=0.05, coupling_bound=2.0) -> nf.MultiscaleFlow:
    """The peer baseline: :func:`inverse_flow` without the inverse convolutions (Glow: ActNorm, 1x1, coupling).

    Same parameters as :func:`inverse_flow` (no kernel).
    """
    return _multiscale(input_shape, levels, steps, hidden, None, logit_alpha, coupling_bound)


def solve_sampling_flow(
    input_shape, levels=2, steps=16, hidden=64, kernel_size=3, *, logit_alpha=0.05, coupling_bound=2.0
) -> nf.MultiscaleFlow:
    """:func:`inverse_flow` with :class:`SolveSamplingFlow` layers: density by convolution, sampling by solve.

    The FInC Flow / Emerging placement, for comparing sampling times. Same parameters as :func:`inverse_flow`.
    """
    return _multiscale(
        input_shape, levels, steps, hidden, _cycling(SolveSamplingFlow, kernel_size), logit_alpha, coupling_bound
    )
