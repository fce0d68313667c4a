"""SIGINT and SIGTERM as an exception, so a long run can write what it has before it exits."""

from __future__ import annotations

import contextlib
import signal

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """Raised in the main thread when SIGINT or SIGTERM arrives; ``str()`` is the signal's name."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum, frame):
    raise Interrupted(signum)


@contextlib.contextmanager
def interruptible():
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted`; the old handlers come back after."""
    previous = {s: signal.signal(s, _raise) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def hold():
    """Ignore further SIGINT and SIGTERM (until the block of :func:`interruptible` ends), so the
    final writes after an interruption complete."""
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
