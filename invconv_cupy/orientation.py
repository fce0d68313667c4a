"""Orientations: the image corner a causal convolution looks towards."""

from __future__ import annotations

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
