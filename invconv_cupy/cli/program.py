"""The ``invconv-deblur`` program: signal handlers first, then everything else.

The console script and ``python -m invconv_cupy.cli`` start here. This module
imports nothing heavy, so a Ctrl-C from the moment it is loaded (a few
milliseconds after Python's own start-up) ends the program cleanly
(:mod:`.interrupts`) instead of printing a traceback from inside an import.
"""

from .interrupts import exit_cleanly_on_signals

PROG = "invconv-deblur"


def run_program() -> int:
    """Install the signal handlers, then run :func:`.main.main` on ``sys.argv``; return its exit code."""
    exit_cleanly_on_signals(PROG)
    from .main import main

    return main()
