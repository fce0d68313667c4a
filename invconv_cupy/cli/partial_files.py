"""The temporary output files of this process, so that a signal handler can remove them.

Standard library only: the signal handlers are installed before NumPy is imported.
"""

from __future__ import annotations

import contextlib
import os

_NAMES: set[str] = set()


def register(name: str) -> None:
    """Remember ``name`` (call before creating the file, so no moment leaves it unremembered)."""
    _NAMES.add(name)


def forget(name: str) -> None:
    """``name`` was renamed into place or removed."""
    _NAMES.discard(name)


def remove_all() -> None:
    """Delete every remembered file that exists (safe to call from a signal handler)."""
    for name in list(_NAMES):
        with contextlib.suppress(OSError):
            os.unlink(name)
