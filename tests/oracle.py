"""A dense float64 oracle for small sizes, built straight from SPEC.md's padding table.

``T`` is the (C*H*W)^2 matrix of ``conv`` in the flat order of ``x[b]``; its
derivative in the weight is kept as a third axis so that weight gradients are
plain contractions. Independent of the package's own code.
"""

import numpy as np

# orientation -> (pad_top, pad_left): the anchor tap is (pad_top, pad_left) as well
_PADS = {"TL": (True, True), "TR": (True, False), "BL": (False, True), "BR": (False, False)}


def anchor(orientation, kh, kw):
    top, left = _PADS[orientation]
    return (kh - 1 if top else 0, kw - 1 if left else 0)


def _entries(weight_shape, height, width, orientation):
    """(row, column, parameter) of every entry of ``T``: ``T[row, column] += weight.flat[parameter]``."""
    C, _, KH, KW = weight_shape
    pt, pl = anchor(orientation, KH, KW)
    idx = np.arange(C * height * width).reshape(C, height, width)
    for o in range(C):
        for c in range(C):
            for a in range(KH):
                for e in range(KW):
                    if (a, e) == (pt, pl) and c > o:
                        continue
                    param = np.ravel_multi_index((o, c, a, e), (C, C, KH, KW))
                    for i in range(height):
                        for j in range(width):
                            si, sj = i + a - pt, j + e - pl
                            if 0 <= si < height and 0 <= sj < width:
                                yield idx[o, i, j], idx[c, si, sj], param


def dense_jacobian(weight_shape, height, width, orientation):
    """``E`` with ``T = E @ weight.ravel()``: shape (n, n, C*C*KH*KW), masked entries left out."""
    C, _, KH, KW = weight_shape
    n = C * height * width
    E = np.zeros((n, n, C * C * KH * KW))
    for row, column, param in _entries(weight_shape, height, width, orientation):
        E[row, column, param] = 1.0
    return E


def dense_matrix(weight, height, width, orientation):
    """``T`` alone (no weight derivative: for more channels than :class:`Dense` holds in memory)."""
    w = np.asarray(weight, dtype=np.float64)
    n = w.shape[0] * height * width
    T = np.zeros((n, n))
    for row, column, param in _entries(w.shape, height, width, orientation):
        T[row, column] += w.flat[param]
    return T


class Dense:
    """Every SPEC function, computed densely in float64."""

    def __init__(self, weight, height, width, orientation):
        self.w = np.asarray(weight, dtype=np.float64)
        self.E = dense_jacobian(self.w.shape, height, width, orientation)
        self.T = self.E @ self.w.ravel()
        self.shape_w = self.w.shape

    def _flat(self, a):
        a = np.asarray(a, dtype=np.float64)
        return a.reshape(a.shape[0], -1)

    def conv(self, x):
        return (self._flat(x) @ self.T.T).reshape(np.shape(x))

    def solve(self, y):
        return np.linalg.solve(self.T, self._flat(y).T).T.reshape(np.shape(y))

    def _weight_grad(self, g, x):
        return np.einsum("br,rcp,bc->p", self._flat(g), self.E, self._flat(x)).reshape(self.shape_w)

    def conv_vjp(self, g, x):
        return (self._flat(g) @ self.T).reshape(np.shape(g)), self._weight_grad(g, x)

    def solve_vjp(self, gx, x):
        gy = np.linalg.solve(self.T.T, self._flat(gx).T).T.reshape(np.shape(gx))
        return gy, -self._weight_grad(gy, x)

    def logdet(self):
        return np.linalg.slogdet(self.T)[1]
