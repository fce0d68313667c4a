"""One-line messages for what the commands do not report themselves: memory errors and third-party warnings."""

from __future__ import annotations

import warnings

#: The longest warning text quoted in the one-line summary.
_QUOTE = 120
#: What ``invconv-deblur`` suggests when memory runs out.
MEMORY_HINT = "try a smaller image or PSF"


def out_of_memory(exc: Exception, hint: str = MEMORY_HINT) -> str:
    """What ran out, from a ``MemoryError`` (NumPy's and CuPy's say how much was asked for), and ``hint``."""
    detail = " ".join(str(exc).split()) or "an allocation failed (its size was not reported)"
    return f"out of memory: {detail}; {hint}"


def _describe(w: warnings.WarningMessage) -> str:
    return f"{w.category.__name__}: {' '.join(str(w.message).split())}"


def warning_lines(caught: list[warnings.WarningMessage], verbose: bool) -> list[str]:
    """The lines to print for the warnings a command raised: each with ``verbose``, else at most one summary.

    Parameters
    ----------
    caught : list of warnings.WarningMessage
        As recorded by ``warnings.catch_warnings(record=True)``.
    verbose : bool
        ``-v``: one line per warning, with where it came from.
    """
    if verbose:
        return [f"warning: {_describe(w)} ({w.filename}:{w.lineno})" for w in caught]
    if not caught:
        return []
    first = _describe(caught[0])
    if len(first) > _QUOTE:
        first = first[: _QUOTE - 3] + "..."
    count = f"{len(caught)} warnings" if len(caught) > 1 else "1 warning"
    return [f"note: {count} from the libraries used (first: {first}); -v shows them all"]
