"""The emulator's settings: :class:`~invconv_cupy.emulator.EmulatorDevice`'s arguments and the
environment variables that give their defaults, read and checked once per device.

Each ``checked_<setting>(name, value)`` accepts an argument's value or a variable's text and
raises ``ValueError`` naming ``name`` (the argument or the variable) when it is out of range.
"""

from __future__ import annotations

import os

import numpy as np

from .build import SANITIZE_FLAGS


def _integer(name, value, low, high, high_text=None):
    if isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        number = int(value)
    else:
        number = None
    if number is None or not low <= number <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high_text or high}, got {value!r}")
    return number


def checked_seed(name, value) -> int:
    """The seed of the block order and every block's thread schedule."""
    return _integer(name, value, 0, 2**64 - 1, "2**64 - 1")


def checked_blocks(name, value) -> int:
    """Blocks running at once (the emulator's worker threads)."""
    return _integer(name, value, 1, 1024)


def checked_sanitize(name, value) -> str:
    """A sanitizer the emulator can build with."""
    if value not in SANITIZE_FLAGS:
        raise ValueError(f"{name} must be unset or one of {', '.join(map(repr, SANITIZE_FLAGS))}, got {value!r}")
    return value


def checked_race(name, value) -> bool:
    """Race mode on or off: a bool, or the text 0 or 1."""
    if isinstance(value, (bool, np.bool_)) or value in ("0", "1"):
        return value in (True, "1")
    raise ValueError(f"{name} must be True or False (1 or 0), got {value!r}")


def checked_watchdog(name, value) -> float:
    """Seconds without progress before a launch is stopped."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    if isinstance(value, bool) or not 0.001 <= seconds <= 86400:
        raise ValueError(f"{name} must be a number of seconds from 0.001 to 86400, got {value!r}")
    return seconds


def _from_env(variable, check, default):
    """``$variable`` checked, or ``default`` when it is unset or blank."""
    text = os.environ.get(variable, "")
    return check(variable, text.strip()) if text.strip() else default


def seed_from_env() -> int | None:
    """``$INVCONV_EMULATE_SEED``, or None (a fresh random seed per launch)."""
    return _from_env("INVCONV_EMULATE_SEED", checked_seed, None)


def sanitize_from_env() -> str | None:
    """``$INVCONV_EMULATE_SANITIZE`` (``address`` or ``thread``), or None."""
    return _from_env("INVCONV_EMULATE_SANITIZE", checked_sanitize, None)


def race_from_env() -> bool:
    """``$INVCONV_EMULATE_RACE`` (``1``: race mode), else off."""
    return _from_env("INVCONV_EMULATE_RACE", checked_race, False)


def blocks_from_env() -> int:
    """``$INVCONV_EMULATE_BLOCKS``, else 4."""
    return _from_env("INVCONV_EMULATE_BLOCKS", checked_blocks, 4)


def watchdog_from_env() -> float:
    """``$INVCONV_EMULATE_WATCHDOG`` (seconds), else 20."""
    return _from_env("INVCONV_EMULATE_WATCHDOG", checked_watchdog, 20.0)
