"""The emulator's environment variables, read and checked once per device."""

from __future__ import annotations

import os

from .build import SANITIZE_FLAGS


def seed_from_env() -> int | None:
    """``$INVCONV_EMULATE_SEED`` as the block-order seed, or None when unset or empty.

    Raises
    ------
    ValueError
        Naming the variable, unless it is a decimal integer from 0 to 2**64 - 1.
    """
    text = os.environ.get("INVCONV_EMULATE_SEED", "")
    if not text.strip():
        return None
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if not 0 <= seed < 2**64:
        raise ValueError(f"INVCONV_EMULATE_SEED must be an integer from 0 to 2**64 - 1, got {text!r}")
    return seed


def sanitize_from_env() -> str | None:
    """``$INVCONV_EMULATE_SANITIZE`` (``"address"`` or ``"thread"``), or None when unset or empty.

    Raises
    ------
    ValueError
        Naming the variable, for a sanitizer the emulator cannot build with.
    """
    value = os.environ.get("INVCONV_EMULATE_SANITIZE") or None
    if value is not None and value not in SANITIZE_FLAGS:
        raise ValueError(
            f"INVCONV_EMULATE_SANITIZE must be empty or one of {', '.join(map(repr, SANITIZE_FLAGS))}, got {value!r}"
        )
    return value
