"""Writing output files: all or nothing, and never a wrong picture.

Every output goes through :func:`atomic_output`: a temporary file beside the
destination, flushed to disk and renamed over it, so a reader sees the old
file or the complete new one. The temporary file is registered before it
exists (:mod:`.partial_files`), so the signal handler (:mod:`.interrupts`)
can remove it at any moment. New files get the mode the umask allows (0644 under umask 022), and a
file replaced with ``--force`` keeps its mode, as ``cp`` does.

:func:`check_result` refuses results that would be a wrong picture: NaN or
infinite values, values that overflow the output's float type, or integer
pictures that clipping would leave saturated.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import secrets
import stat
from pathlib import Path

import numpy as np

from . import partial_files
from .errors import CliError

#: An integer picture is refused when more than this share of its pixels lies more than
#: one full range outside [0, 1]: clipping would leave a saturated, meaningless picture.
SATURATED_SHARE = 0.5

_HINT = "try --method tikhonov, a moderate --lam, or a PSF that sums to about 1"


def _open_temporary(path: Path):
    """Create ``.<name>.<random>.tmp`` beside ``path`` and return it open for binary writing."""
    replaced_mode = None
    with contextlib.suppress(FileNotFoundError):
        replaced_mode = stat.S_IMODE(os.stat(path).st_mode)
    while True:
        name = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        partial_files.register(name)
        try:
            handle = open(name, "xb")   # O_EXCL, mode 0666 less the umask
        except FileExistsError:
            partial_files.forget(name)
            continue
        except BaseException:
            partial_files.forget(name)
            raise
        if replaced_mode is not None:
            os.fchmod(handle.fileno(), replaced_mode)
        return handle


def _reason(exc: OSError, name: str) -> str:
    """Why writing failed; a full file under ``ulimit -f`` says so (Python reports only a short write)."""
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    with contextlib.suppress(OSError):
        if exc.errno == errno.EFBIG or (limit != resource.RLIM_INFINITY and os.stat(name).st_size >= limit):
            return f"the file reached this process's file size limit ({limit} bytes, ulimit -f)"
    return exc.strerror or str(exc)


@contextlib.contextmanager
def atomic_output(path: Path):
    """Yield a binary file in ``path``'s folder that replaces ``path`` only if the block succeeds.

    Creates the folder if needed.

    Raises
    ------
    CliError
        When the file cannot be written (permissions, disk full, file size limit, ...).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = _open_temporary(path)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
    name, replaced = handle.name, False
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(name, path)
        replaced = True
    except OSError as exc:
        raise CliError(f"cannot write {path}: {_reason(exc, name)}") from None
    finally:
        if not replaced:
            with contextlib.suppress(OSError):
                os.unlink(name)
        partial_files.forget(name)


def check_result(path: Path, data: np.ndarray, pixels: np.ndarray) -> None:
    """Refuse to write a result that would be a wrong picture.

    Parameters
    ----------
    path : Path
        The output, for the message.
    data : numpy.ndarray
        The computed result (float64; integer pictures on the ``[0, 1]`` scale).
    pixels : numpy.ndarray
        ``data`` as it would be stored (the output's dtype).

    Raises
    ------
    CliError
        If ``data`` has NaN or infinite values, if ``pixels`` overflowed a float
        type, or if more than ``SATURATED_SHARE`` of an integer picture lies more
        than a full range outside ``[0, 1]``.
    """
    bad = data.size - np.count_nonzero(np.isfinite(data))
    if bad:
        raise CliError(
            f"{path} not written: {bad} of {data.size} values of the result are NaN or infinite "
            f"(the computation overflowed); {_HINT}"
        )
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        raise CliError(
            f"{path} not written: the result reaches {np.abs(data).max():.3g}, more than {pixels.dtype} holds "
            f"({np.finfo(pixels.dtype).max:.5g}); convert the input to float32 or float64"
        )
    if pixels.dtype.kind in "ui":
        far = np.count_nonzero((data < -1.0) | (data > 2.0))
        if far > SATURATED_SHARE * data.size:
            raise CliError(
                f"{path} not written: {100 * far / data.size:.0f}% of the result lies more than a full range outside "
                f"the picture's (up to {np.abs(data).max():.3g} times its maximum), so as {pixels.dtype} it would be "
                f"a saturated picture; {_HINT}"
            )


def write_array(path: Path, array: np.ndarray) -> None:
    """Save ``array`` as ``.npy`` at ``path``, atomically, after checking that it is finite."""
    check_result(path, array, array)
    with atomic_output(path) as handle:
        np.save(handle, array, allow_pickle=False)
