"""The ``invconv-flow`` program: signal handlers first, then everything else.

As ``invconv-deblur``'s (:mod:`invconv_cupy.cli.program`): Ctrl-C or SIGTERM at
any moment removes a checkpoint being written (the last complete one stays),
prints one line and exits with 130 or 143.
"""

from invconv_cupy.cli.interrupts import exit_cleanly_on_signals

PROG = "invconv-flow"


def run_program() -> int:
    """Install the signal handlers, then run :func:`.main.main` on ``sys.argv``; return its exit code."""
    exit_cleanly_on_signals(PROG)
    from .main import main

    return main()
