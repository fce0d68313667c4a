"""Bits per dimension of a model on a set of images, over several dequantization draws."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from invconv_cupy.torch.dequantization import bits_per_dim, dequantize


@dataclass(frozen=True)
class Score:
    """Test bits per dimension.

    Attributes
    ----------
    per_image : numpy.ndarray, shape (N,)
        Each image's bits per dimension, averaged over the draws.
    draw_means : numpy.ndarray, shape (draws,)
        The mean over the images of each dequantization draw.
    """

    per_image: np.ndarray
    draw_means: np.ndarray

    @property
    def mean(self) -> float:
        """Bits per dimension over all images and draws."""
        return float(self.per_image.mean())

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """Student-t confidence interval of the mean over images (NaN for a single image)."""
        n = len(self.per_image)
        if n < 2:
            return (math.nan, math.nan)
        half = stats.t.ppf(0.5 + confidence / 2, n - 1) * self.per_image.std(ddof=1) / math.sqrt(n)
        return (self.mean - half, self.mean + half)


@torch.no_grad()
def score(model, images: np.ndarray, levels: int, *, draws: int = 1, batch: int = 500,
          generator: torch.Generator, device: torch.device) -> Score:
    """Bits per dimension of ``model`` on uint8 ``images`` ``(N, C, H, W)``.

    Each draw dequantizes every image with fresh uniform noise from ``generator``
    (a CPU generator, so the noise does not depend on the device).
    """
    dims = int(np.prod(images.shape[1:]))
    data = torch.from_numpy(images)
    results = np.empty((draws, len(images)))
    for d in range(draws):
        for start in range(0, len(images), batch):
            u = dequantize(data[start : start + batch], levels, generator).to(device)
            log_prob = model.log_prob(u, None)
            results[d, start : start + batch] = bits_per_dim(log_prob, dims, levels).double().cpu().numpy()
    return Score(results.mean(axis=0), results.mean(axis=1))
