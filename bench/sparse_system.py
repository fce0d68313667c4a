"""The triangular system of ``conv`` as a sparse matrix, for the sparse-solver baselines.

Unknowns are ordered pixel-major from the orientation's corner and channel-minor,
so the matrix is lower-triangular: row ``(pixel, o)`` depends only on earlier
pixels and on channels ``c <= o`` of its own pixel.
"""

import numpy as np
import scipy.sparse as sp


def triangular_matrix(weight, height, width):
    """CSR matrix of the ``"TL"`` convolution with ``weight`` (float64 or float32)."""
    weight = np.asarray(weight)
    C, _, KH, KW = weight.shape
    ii, jj = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    rows, cols, vals = [], [], []
    o, c = np.meshgrid(np.arange(C), np.arange(C), indexing="ij")
    for a in range(KH):
        for e in range(KW):
            si, sj = ii + a - (KH - 1), jj + e - (KW - 1)
            ok = (si >= 0) & (sj >= 0)
            keep = (c <= o) if (a, e) == (KH - 1, KW - 1) else np.ones_like(o, dtype=bool)
            target = (ii[ok] * width + jj[ok])[:, None] * C + o[keep][None, :]
            source = (si[ok] * width + sj[ok])[:, None] * C + c[keep][None, :]
            rows.append(target.ravel())
            cols.append(source.ravel())
            vals.append(np.broadcast_to(weight[:, :, a, e][keep], target.shape).ravel())
    n = C * height * width
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))


def to_columns(images):
    """(B, C, H, W) -> (H*W*C, B): one right-hand side per image, in the matrix's order."""
    B = images.shape[0]
    return np.ascontiguousarray(images.transpose(2, 3, 1, 0).reshape(-1, B))


def from_columns(columns, shape):
    B, C, H, W = shape
    return columns.reshape(H, W, C, B).transpose(3, 2, 0, 1)
