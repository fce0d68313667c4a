"""Orientations: the image corner a causal convolution looks towards."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

ORIENTATIONS = ("TL", "TR", "BL", "BR")


@dataclass(frozen=True)
class Orientation:
    """An orientation as two axis flips that map it onto the ``"TL"`` frame.

    ``conv_O(x, w) = flip(conv_TL(flip(x), flip(w)))`` where ``flip`` reverses
    the height axis when ``flip_h`` and the width axis when ``flip_w``.
    """

    name: str
    flip_h: bool
    flip_w: bool

    def anchor(self, kh: int, kw: int) -> tuple[int, int]:
        """The tap ``(a*, e*)`` that multiplies the output pixel's own position."""
        return (0 if self.flip_h else kh - 1, 0 if self.flip_w else kw - 1)


_BY_NAME = {
    "TL": Orientation("TL", False, False),
    "TR": Orientation("TR", False, True),
    "BL": Orientation("BL", True, False),
    "BR": Orientation("BR", True, True),
}


def anchor_index(orientation: str, kernel_size) -> tuple[int, int]:
    """The position ``(a, e)`` of the anchor tap in a weight of ``kernel_size`` for ``orientation``.

    The anchor tap multiplies the output pixel's own position; its channel
    matrix ``weight[:, :, a, e]`` is used lower-triangular, and its diagonal must
    be nonzero for ``solve`` (``log|det T| = H * W * sum_o log|weight[o, o, a, e]|``).
    It sits at the kernel's corner towards which the orientation looks away:

    ==========  ==================
    orientation ``(a, e)``
    ==========  ==================
    ``"TL"``    ``(KH - 1, KW - 1)``
    ``"TR"``    ``(KH - 1, 0)``
    ``"BL"``    ``(0, KW - 1)``
    ``"BR"``    ``(0, 0)``
    ==========  ==================

    Parameters
    ----------
    orientation : {"TL", "TR", "BL", "BR"}
    kernel_size : int or tuple of two ints
        ``K`` for a square ``K x K`` kernel, or ``(KH, KW)``; each at least 1.

    Returns
    -------
    tuple of two ints

    Raises
    ------
    ValueError
        For an unknown orientation or a size below 1.
    TypeError
        For a size that is not an int or a pair of ints.

    Examples
    --------
    >>> import invconv_cupy as ic
    >>> ic.anchor_index("TR", 3)
    (2, 0)
    >>> ic.anchor_index("BL", (2, 5))
    (0, 4)
    """
    orient = parse_orientation(orientation)
    size = (kernel_size, kernel_size) if isinstance(kernel_size, numbers.Integral) else kernel_size
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(k, numbers.Integral) and not isinstance(k, bool) for k in size)
    ):
        raise TypeError(f"kernel_size must be an int or a pair of ints (KH, KW), got {kernel_size!r}")
    if min(size) < 1:
        raise ValueError(f"kernel_size must be at least 1, got {kernel_size!r}")
    return orient.anchor(int(size[0]), int(size[1]))


def parse_orientation(orientation) -> Orientation:
    """Return the :class:`Orientation` named ``orientation`` or raise ``ValueError``."""
    if isinstance(orientation, Orientation):
        return orientation
    if not isinstance(orientation, str) or orientation not in _BY_NAME:
        raise ValueError(
            f"orientation must be one of {', '.join(repr(o) for o in ORIENTATIONS)}, "
            f"got {orientation!r}"
        )
    return _BY_NAME[orientation]
