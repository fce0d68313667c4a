"""Ctrl-C and SIGTERM for the command line: partial outputs removed, one line, exit at once.

The handlers end the process from wherever it is (``os._exit``), so no
traceback can be printed however early or late the signal arrives, and no
``finally`` clause has to run for the temporary files: the handler removes
them itself (:mod:`.partial_files`). Standard library only (``os``, ``signal``,
``sys``, ``contextlib``): the program installs the handlers before any other import.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from . import partial_files

#: What each handled signal ends with on stderr; the exit code is 128 + the signal's number, as shells report.
SIGNALS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


def exit_cleanly_on_signals(prog: str) -> None:
    """Make SIGINT and SIGTERM remove partial outputs, print ``<prog>: interrupted`` (or ``terminated``) and exit.

    For the rest of the process; does nothing outside the main thread (where
    Python cannot install signal handlers).
    """

    def handler(signum, frame):
        partial_files.remove_all()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):   # a stream closed, or interrupted mid-write
                stream.flush()
        with contextlib.suppress(OSError):
            os.write(2, f"{prog}: {SIGNALS[signum]}\n".encode())
        os._exit(128 + signum)

    for signum in SIGNALS:
        try:
            signal.signal(signum, handler)
        except ValueError:   # not the main thread
            return
