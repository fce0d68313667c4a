"""The NumPy solve: a wavefront over anti-diagonals on a skewed copy of the image.

In the TL frame pixel ``(i, j)`` depends on pixels up and to the left within the
kernel's reach, so the ``H + W - 1`` anti-diagonals ``i + j = d`` are solved in
order, each in one step, all pixels of a diagonal and all images at once.

The solution lives in a *skewed store* of 2-D shape ``((H+W-1+DP)*C, R*B)``
(``PH x PW`` the taps that reach into the image, ``DP = PH+PW-2`` rows of
diagonals of zero padding in front, ``R = H+PH-1``): channel ``c`` of pixel
``(i, j)`` of image ``b`` is at row ``C*(i+j+DP) + c``, column
``(i+PH-1)*B + b``. A diagonal's channel is one contiguous run of a row, and
the taps ``(p, q)`` of one row shift ``p`` read ``PW*C`` consecutive rows of one
column range: an ordinary strided matrix. A step is then one batched matrix
product over ``p`` on a view of the store (no gathers) and the sum of its ``PH``
terms.

A :class:`Wavefront` holds the store and every step's views for one problem
shape; :func:`wavefront` keeps the most recently used ones per thread, up to
:data:`CACHE_BYTES` (0 keeps none), so a repeated solve (training: the same
shapes every step) builds nothing and zeroes nothing: only the image's own
positions are ever written, and the padding stays zero.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict

import numpy as np
from scipy.linalg.lapack import dtrtri

#: per thread, the stores of recent problem shapes are kept up to this many bytes in all
CACHE_BYTES = 64 * 2**20


def tap_blocks(w, reach, dtype, transpose: bool = False):
    """The weights of one step: ``(PH, C, PW*C)`` in ``dtype``, computed in float64.

    ``w`` is the weight in the TL frame (the anchor tap last); ``reach`` is
    ``(PH, PW)``. ``blocks[p][o, (PW-1-q)*C + c]`` is ``-(A^-1 W_pq)[o, c]`` for
    the tap ``p`` rows up and ``q`` columns left of the pixel, and ``A^-1``
    itself for the anchor (``p = q = 0``), with ``A`` the anchor's lower
    triangle (the upper one is never read). With ``transpose`` the taps are
    channel-transposed and ``A^-T`` replaces ``A^-1``: the blocks of ``T^T`` in
    the frame where its solve runs from the top-left corner. A zero on ``A``'s
    diagonal gives NaN blocks, not an error (the API checks unless told not to).
    """
    C, _, KH, KW = w.shape
    PH, PW = reach
    # LAPACK's triangular inverse reads the lower triangle only; the upper one keeps A's.
    # (Not a triangular solve: OpenBLAS's trsm runs threads even at this size, 50x-70x
    # slower on a busy machine.)
    inverse, info = dtrtri(w[:, :, -1, -1], lower=1)
    if info > 0:  # a zero on the diagonal: no inverse
        inverse.fill(np.nan)
    inverse *= _negated_lower_mask(C)  # -A^-1
    w = w.astype(np.float64)
    if transpose:
        m = inverse.T @ w.swapaxes(0, 1).reshape(C, -1)
    else:
        m = inverse @ w.reshape(C, -1)
    # m[o, c, a, e] = -(A^-1 W_tap(a, e))[o, c]; a step's rows are the taps p = KH-1-a rows up,
    # in the order q' = PW-1-q of the tap q columns left
    m = m.reshape(C, C, KH, KW)[:, :, ::-1][:, :, :PH, KW - PW :]
    blocks = np.ascontiguousarray(m.transpose(2, 0, 3, 1), dtype=dtype).reshape(PH, C, PW * C)
    np.negative(inverse.T if transpose else inverse, out=blocks[0, :, -C:])  # the anchor's block
    return blocks


@functools.cache
def _negated_lower_mask(n):
    mask = -np.tri(n)
    mask.setflags(write=False)  # shared by every call
    return mask


class Wavefront:
    """The skewed store of one problem shape and the views every step works on.

    Parameters
    ----------
    shape : (B, C, H, W)
    reach : (PH, PW)
        The taps that reach into the image: ``(min(KH, H), min(KW, W))``.
    dtype : numpy.dtype
    """

    def __init__(self, shape, reach, dtype):
        B, C, H, W = shape
        PH, PW = reach
        DP = PH + PW - 2
        L = (H + PH - 1) * B  # row length
        item = np.dtype(dtype).itemsize
        self.store = np.zeros(((H + W - 1 + DP) * C, L), dtype)
        #: the image inside the store, (H, W, B, C)
        self.pixels = np.ndarray((H, W, B, C), dtype, self.store, (C * DP * L + (PH - 1) * B) * item,
                                 ((C * L + B) * item, C * L * item, item, L * item))
        order = _staging_order(shape, item)
        self._staging = None if order is None else (np.empty([shape[axis] for axis in order], dtype), order)
        products = np.empty(PH * C * min(H, W) * B, dtype)
        self.steps = []
        for d in range(H + W - 1):
            i0, i1 = max(0, d - W + 1), min(H - 1, d)
            n = (i1 - i0 + 1) * B
            col = (i0 + PH - 1) * B
            # the taps of shift p: rows [C*(d+DP-p-PW+1), +PW*C), columns shifted by -p*B
            sources = np.ndarray((PH, PW * C, n), dtype, self.store, (C * (d + DP - PW + 1) * L + col) * item,
                                 (-(C * L + B) * item, L * item, item))
            target = self.store[C * (d + DP) : C * (d + DP + 1), col : col + n]
            if PH == 1:  # the product is x (numpy's matmul buffers an output that overlaps its input)
                self.steps.append((sources, target[np.newaxis], ()))
                continue
            terms = products[: PH * C * n].reshape(PH, C, n)
            self.steps.append((sources, terms, _sum_into(target, terms)))
        self.nbytes = self.store.nbytes + products.nbytes + (self._staging[0].nbytes if self._staging else 0)

    def load(self, y):
        """Write ``y`` (B, C, H, W), any strides, into the store's image positions."""
        if self._staging is None:
            self.pixels[...] = y.transpose(2, 3, 0, 1)
            return
        buffer, order = self._staging
        np.copyto(buffer, y.transpose(order))
        np.copyto(self.pixels.transpose([(2, 3, 0, 1)[axis] for axis in order]), buffer)

    def run(self, blocks):
        """Solve in place, diagonal by diagonal, with :func:`tap_blocks`' ``blocks``.

        The image positions hold ``y`` before and ``x`` after; the anchor block
        turns each diagonal's ``y`` into ``x`` together with the other taps.
        """
        for sources, terms, sums in self.steps:
            np.matmul(blocks, sources, out=terms)
            for add in sums:
                add()


#: a step adds up at most this many terms one addition at a time, more in one reduction
CHAINED_SUMS = 3


def _sum_into(target, terms):
    """The calls that write the sum of a step's ``terms`` (PH, C, n) into ``target`` (C, n).

    ``PH - 1`` additions cost less than one reduction over the first axis up to
    3 terms (2.5x less for two, 1.5x for three at 16 x 512); beyond, their
    per-call cost wins out (3x more for 15 terms of 3 x 256).
    """
    if len(terms) > CHAINED_SUMS:
        return (functools.partial(np.add.reduce, terms, axis=0, out=target),)
    first = functools.partial(np.add, terms[0], terms[1], out=target)
    return (first,) + tuple(functools.partial(np.add, target, term, out=target) for term in terms[2:])


def _staging_order(shape, itemsize):
    """The axis order of ``y``'s copy on its way into the store, or None for a direct copy.

    A direct copy runs over images innermost (the store's contiguous axis) and
    reads ``y`` with strides of ``C*H*W`` items (and ``H*W`` between channels).
    When those are multiples of 4 KiB, the lines read for one pixel collide in
    the cache; with more than 32 of them the copy thrashes (2x-3x slower at
    64 x 16 x 8 x 8 and 100 x 12 x 32 x 32 on a 2-core AMD EPYC VM). Then ``y``
    goes through a staging buffer: the first copy moves whole image rows, the
    second reads it with a short stride: ``(C, B, H, W)`` when the channel
    planes ``H*W`` are under 4 KiB, else ``(C, H, B, W)``.
    """
    B, C, H, W = shape
    page = 4096
    colliding = (B if C * H * W * itemsize % page == 0 else 1) * (C if H * W * itemsize % page == 0 else 1)
    if colliding <= 32:
        return None
    return (1, 0, 2, 3) if H * W * itemsize < page else (1, 2, 0, 3)


class _Cache(threading.local):
    """The most recently used :class:`Wavefront` per problem shape, up to :data:`CACHE_BYTES` in all, per thread."""

    def __init__(self):
        self.plans: OrderedDict[tuple, Wavefront] = OrderedDict()

    def get(self, shape, reach, dtype) -> Wavefront:
        key = (shape, reach, dtype)
        plan = self.plans.get(key)
        if plan is not None:
            self.plans.move_to_end(key)  # most recently used last
            return plan
        plan = Wavefront(shape, reach, dtype)
        if plan.nbytes <= CACHE_BYTES:
            self.plans[key] = plan
            while sum(kept.nbytes for kept in self.plans.values()) > CACHE_BYTES:
                self.plans.popitem(last=False)
        return plan


_cache = _Cache()


def wavefront(shape, reach, dtype) -> Wavefront:
    """A :class:`Wavefront` for this problem shape, this thread's kept one where there is one."""
    return _cache.get(shape, reach, dtype)
