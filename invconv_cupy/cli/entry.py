"""What the command lines (``invconv-deblur``, ``invconv-flow``) share: one-line usage errors and exit codes.

:func:`run_subcommand` parses the arguments, runs the subcommand (the ``run``
function of the module named like it) and turns what ends it into an exit code:
0 done; 2 a :class:`.CliError` or too little memory, with one line on stderr,
``<prog>: error: <what is wrong>``; 130 ``KeyboardInterrupt`` (in-process; the
programs themselves end at once on signals, :mod:`.interrupts`). Warnings from
the libraries used end a successful run as one summary line (``-v``: each).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap
import warnings

from . import messages
from .errors import CliError


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one-line :class:`CliError`."""

    def error(self, message):
        raise CliError(f"{message} (see {self.prog} --help)")


def wrap(text: str) -> str:
    """A paragraph wrapped for help output."""
    return textwrap.fill(text, 79)


def run_subcommand(prog: str, argv, build_parser, package: str, *, memory_errors=(MemoryError,),
                   memory_hint: str = messages.MEMORY_HINT) -> int:
    """Run ``prog argv``; return its exit code (see the module's docstring).

    Parameters
    ----------
    prog : str
        The program's name, for messages.
    argv : list of str or None
        The arguments (None: ``sys.argv[1:]``).
    build_parser : callable
        Returns the parser; its subcommand is ``args.command`` and ``args.verbose`` is ``-v``.
    package : str
        The package whose module ``<package>.<command>`` has ``run(args)``.
    memory_errors : tuple of exception types
        What counts as running out of memory.
    memory_hint : str
        What to try then.
    """
    with warnings.catch_warnings(record=True) as caught:
        code, verbose = _run(prog, argv, build_parser, package, memory_errors, memory_hint)
    if verbose or code == 0:
        for line in messages.warning_lines(caught, verbose):
            print(f"{prog}: {line}", file=sys.stderr)
    return code


def _run(prog, argv, build_parser, package, memory_errors, memory_hint) -> tuple[int, bool]:
    """Parse and run a command; return the exit code and whether ``-v`` was given."""
    verbose = False
    try:
        args = build_parser().parse_args(argv)
        verbose = args.verbose
        importlib.import_module(f"{package}.{args.command}").run(args)
    except CliError as exc:
        message = str(exc).replace("\n", " ")
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2, verbose
    except memory_errors as exc:
        print(f"{prog}: error: {messages.out_of_memory(exc, memory_hint)}", file=sys.stderr)
        return 2, verbose
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130, verbose
    return 0, verbose
