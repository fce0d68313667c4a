"""Plain-torch reference implementations, differentiated by autograd.

Slow and simple, on any device: ``conv`` is ``torch.nn.functional.conv2d``
after causal padding (the adapter's own convolution path, here differentiated
by autograd instead of by the ops' hand-written rules); ``solve`` is
pixel-by-pixel substitution (``H * W`` sequential steps), sharing no code with
the optimized solve. The tests compare values and gradients of one against the
other.
"""

from __future__ import annotations

import torch
from torch import Tensor

from invconv_cupy.orientation import parse_orientation

from ._conv2d import conv, masked_weight

__all__ = ["conv", "masked_weight", "solve"]


def solve(y: Tensor, weight: Tensor, orientation: str = "TL") -> Tensor:
    """Inverse of :func:`conv` by substitution, one pixel at a time, in the ``"TL"`` frame."""
    orient = parse_orientation(orientation)
    dims = [d for d, flip in ((-2, orient.flip_h), (-1, orient.flip_w)) if flip]
    y = y.flip(dims)
    w = masked_weight(weight, orientation).flip(dims)  # now the anchor is the last tap
    _, _, H, W = y.shape
    kh, kw = w.shape[2:]
    anchor = w[:, :, -1, -1]
    x = [[None] * W for _ in range(H)]  # x[i][j]: (B, C), filled in raster order
    for i in range(H):
        for j in range(W):
            r = y[:, :, i, j]
            for a in range(kh):
                for e in range(kw):
                    si, sj = i + a - (kh - 1), j + e - (kw - 1)
                    if (a, e) != (kh - 1, kw - 1) and si >= 0 and sj >= 0:
                        r = r - x[si][sj] @ w[:, :, a, e].T
            x[i][j] = torch.linalg.solve_triangular(anchor, r.T, upper=False).T
    rows = [torch.stack(row, dim=-1) for row in x]  # each (B, C, W)
    return torch.stack(rows, dim=-2).flip(dims)
