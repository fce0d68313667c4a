"""Compile a kernel family for the CPU: g++ behind ``kernels/cuda_shim.h``, cached by hash, checked by checksum.

The shared library for one source string is built once and kept in the cache
directory (``$INVCONV_CUPY_CACHE_DIR``, else ``$XDG_CACHE_HOME/invconv_cupy``,
else ``~/.cache/invconv_cupy``; an empty variable counts as unset), as
``emulator/<key>-<digest>.so``: ``key`` hashes the full source, the flags and the
compiler's version, ``digest`` is the start of the library's own SHA-256.

- **The emulator's runtime** (``kernels/cuda_shim_runtime.cpp``: fibers, the block
  scheduler, warps, the watchdog) is compiled once per compiler, sanitizer and
  configuration into a cached object, ``emulator/<key>-<digest>.o`` (:func:`runtime_object`),
  that every library of a source including the shim (:func:`emulator_source`) links:
  a kernel library compiles only its kernels and the thin header. Text before the
  shim in such a source (``#define IC_EMU_UCONTEXT 1``) configures the runtime too.
  The object is cached, checked and healed like a library.
- **Concurrent processes** compile into private ``.build-*`` folders and rename
  the result into place, so nobody sees a half-written library. ``.build-*``
  folders older than an hour (left by a killed compile) are removed.
- **Damage** (a truncated or corrupted library) is found by the checksum before
  the library is loaded: the entry is removed and rebuilt once; if the rebuilt
  library is damaged too, :class:`KernelCacheError` names it.
- **An unusable cache folder** (not creatable, not writable, a file) makes this
  process compile into a private temporary folder instead, removed at exit,
  with one :class:`KernelCacheWarning`.

``$CXX`` names the compiler (default ``g++``). Every library checks the
alignment of typed accesses (``-fsanitize=alignment``; the shim's handler turns
a report into a launch error). ``sanitize="address"`` adds AddressSanitizer,
``sanitize="thread"`` ThreadSanitizer; such a library loads only into a process
started with ``LD_PRELOAD`` of the compiler's runtime (see :func:`sanitizer_runtime`).
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path

from .. import kernel_source

#: flags of every compile
FLAGS = ("-std=c++20", "-O1", "-fPIC", "-pthread")
#: a shared library; its own code checks the alignment of typed accesses
LIBRARY_FLAGS = ("-shared", "-fsanitize=alignment", "-fno-sanitize-recover=alignment")
#: the runtime's object: names hidden, so each library keeps its own copy to itself
RUNTIME_FLAGS = ("-c", "-fvisibility=hidden")
SANITIZE_FLAGS = {"address": ("-fsanitize=address", "-fno-omit-frame-pointer"),
                  "thread": ("-fsanitize=thread", "-fno-omit-frame-pointer")}
#: debug information of sanitized builds, for file:line in reports: all of it for kernel code, line
#: tables for the runtime (its object then compiles about a fifth faster, at a third of the size)
SANITIZE_DEBUG = {".so": "-g", ".o": "-g1"}
_RUNTIMES = {"address": "libasan.so", "thread": "libtsan.so"}
#: A ``.build-*`` folder untouched for this long belongs to a compile that was killed.
STALE_BUILD_SECONDS = 3600
_DIGEST_CHARS = 16
_ELF_MAGIC = b"\x7fELF"


class KernelCompileError(RuntimeError):
    """The host compiler rejected a kernel source, or produced no library; the message says which and why."""


class KernelCacheError(RuntimeError):
    """A cached library is damaged even after a rebuild; the message names it."""


class KernelCacheWarning(UserWarning):
    """The cache folder cannot be used; this process compiles into a private temporary folder."""


def cache_dir() -> Path:
    """The configured folder for compiled kernels (created on first use).

    Raises ``RuntimeError`` when it lies under a home folder that cannot be
    determined; :func:`build` then falls back to a private temporary folder.
    """
    root = os.environ.get("INVCONV_CUPY_CACHE_DIR") or None
    if root is None:
        xdg = os.environ.get("XDG_CACHE_HOME")
        # The XDG spec: a relative path is invalid and ignored.
        root = Path(xdg if xdg and os.path.isabs(xdg) else Path.home() / ".cache") / "invconv_cupy"
    return Path(root) / "emulator"


def compiler() -> str:
    """The host C++ compiler command."""
    return os.environ.get("CXX", "g++")


@functools.cache
def _compiler_version(cxx: str) -> str:
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise KernelCompileError(
            f"the emulate backend needs a C++20 compiler; running {cxx!r} failed ({exc}). "
            "Install g++ or point $CXX at one."
        ) from exc
    return out.stdout


def sanitizer_runtime(sanitize: str) -> str:
    """Path of the compiler's runtime for ``sanitize`` (``"address"`` or ``"thread"``), for ``LD_PRELOAD``."""
    out = subprocess.run([compiler(), f"-print-file-name={_RUNTIMES[sanitize]}"], capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def asan_runtime() -> str:
    """Path of the compiler's AddressSanitizer runtime, for ``LD_PRELOAD``."""
    return sanitizer_runtime("address")


def emulator_source(family_source: str, entries) -> str:
    """The shim, the family's source, and one launcher per entry point (:func:`build` links the runtime)."""
    launchers = "\n".join(f"IC_EMULATOR_ENTRY({name})" for name in entries)
    return "\n".join((kernel_source.read("cuda_shim.h"), family_source, "// generated launchers", launchers, ""))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:_DIGEST_CHARS]


def _intact(path: Path) -> bool:
    """Whether ``path``'s contents still match the digest in its name."""
    try:
        return _digest(path) == path.stem.rpartition("-")[2]
    except OSError:
        return False


def _lookup(directories, key: str, suffix: str) -> Path | None:
    """An intact file ``<key>-<digest><suffix>``; damaged ones found on the way are removed (where allowed)."""
    for directory in directories:
        try:
            candidates = sorted(directory.glob(f"{key}-*{suffix}"))
        except OSError:
            continue
        for path in candidates:
            if _intact(path):
                return path
            try:
                path.unlink()
            except OSError:
                pass   # a read-only cache: leave it, compile elsewhere
    return None


class _PrivateFolder:
    """This process's fallback cache: a private temporary folder, created on first use and removed at exit."""

    def __init__(self):
        self._lock = threading.Lock()
        self._path = None
        self._warned = set()

    @property
    def created(self) -> list[Path]:
        """The folder, if it exists, as a list (to search it)."""
        return [] if self._path is None else [self._path]

    def instead_of(self, configured, reason: str) -> Path:
        """The folder, with one warning per configured folder that cannot be used."""
        with self._lock:
            if self._path is None:
                self._path = Path(tempfile.mkdtemp(prefix="invconv_cupy-kernels-"))
                atexit.register(shutil.rmtree, self._path, ignore_errors=True)
            first = str(configured) not in self._warned
            self._warned.add(str(configured))
        if first:
            warnings.warn(
                f"the emulator's kernel cache {configured} cannot be used ({reason}); this process compiles into "
                f"the private temporary folder {self._path} instead (set INVCONV_CUPY_CACHE_DIR to a writable "
                "folder to keep compiled kernels)",
                KernelCacheWarning,
                stacklevel=4,
            )
        return self._path


_private = _PrivateFolder()


def _remove_stale_builds(directory: Path) -> None:
    cutoff = time.time() - STALE_BUILD_SECONDS
    for folder in directory.glob(".build-*"):
        try:
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass   # removed by another process meanwhile


def _build_folder(configured: Path | None, reason: str) -> tuple[Path, tempfile.TemporaryDirectory]:
    """A fresh ``.build-*`` folder in the configured cache, else in the private fallback."""
    if configured is not None:
        try:
            configured.mkdir(parents=True, exist_ok=True)
            _remove_stale_builds(configured)
            return configured, tempfile.TemporaryDirectory(dir=configured, prefix=".build-")
        except (OSError, ValueError) as exc:   # ValueError: a path with a NUL byte
            reason = getattr(exc, "strerror", None) or str(exc)
    private = _private.instead_of(configured if configured is not None else "under the home folder", reason)
    return private, tempfile.TemporaryDirectory(dir=private, prefix=".build-")


def _install(built: Path, directory: Path, key: str) -> Path:
    """Move a freshly built library or object into the cache under its checksummed name."""
    target = directory / f"{key}-{_digest(built)}{built.suffix}"
    os.replace(built, target)
    return target


def _file_size_note() -> str:
    """A hint when this process may only write files up to some size (``ulimit -f``)."""
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return "" if limit == resource.RLIM_INFINITY else f" (this process has a file size limit of {limit} bytes)"


def _compile(cxx: str, flags, text: str, inputs, tmp: Path, suffix: str) -> Path:
    src, out = tmp / "kernel.cpp", tmp / f"kernel{suffix}"
    src.write_text(text, encoding="utf-8")
    # compiled inside the private build folder by relative names, and its path mapped away in debug
    # info: the same source gives the same bytes in any folder (the shim records source locations),
    # so concurrent builds agree on the checksum (inputs: cached objects, by absolute path)
    result = subprocess.run([cxx, *flags, f"-ffile-prefix-map={tmp}=.", "-o", out.name, src.name, *map(str, inputs)],
                            capture_output=True, text=True, cwd=tmp)
    if result.returncode < 0:
        raise KernelCompileError(
            f"$CXX ({cxx}) was killed by {signal.Signals(-result.returncode).name} while compiling a kernel"
            f"{_file_size_note()}:\n{result.stderr}"
        )
    if result.returncode != 0:
        raise KernelCompileError(f"{cxx} failed to compile a kernel for the emulator{_file_size_note()}:\n{result.stderr}")
    try:
        with open(out, "rb") as f:
            is_elf = f.read(len(_ELF_MAGIC)) == _ELF_MAGIC
    except FileNotFoundError:
        is_elf = False
    if not is_elf:
        what = "a shared library" if suffix == ".so" else "an object file"
        raise KernelCompileError(
            f"$CXX ({cxx}) exited successfully but did not write {what} to {out}; "
            "point $CXX at a C++20 compiler such as g++"
        )
    return out


def _cached(cxx: str, flags, text: str, suffix: str, inputs=()) -> Path:
    """The cached output of compiling ``text`` with ``flags`` (and linking ``inputs``, cached objects)."""
    linked = [path.stem.rpartition("-")[0] for path in inputs]   # their keys: what they are built from
    key = hashlib.sha256("\0".join((text, " ".join(flags), _compiler_version(cxx), *linked)).encode()).hexdigest()[:32]
    try:
        configured, reason = cache_dir(), ""
    except RuntimeError as exc:   # no home folder to put ~/.cache in
        configured, reason = None, str(exc)
    found = _lookup(([configured] if configured is not None else []) + _private.created, key, suffix)
    if found is not None:
        return found
    directory, tmp = _build_folder(configured, reason)
    try:
        with tmp as folder:
            target = _install(_compile(cxx, flags, text, inputs, Path(folder), suffix), directory, key)
    except OSError as exc:
        raise KernelCompileError(f"cannot write a compiled kernel into {directory}{_file_size_note()}: {exc}") from None
    if not _intact(target):
        raise KernelCacheError(
            f"the emulator's compiled kernel {target} is damaged right after it was built (it does not match its "
            "checksum); check that disk, or set INVCONV_CUPY_CACHE_DIR to a folder on another one"
        )
    return target


def _flags(sanitize: str | None, suffix: str) -> tuple[str, ...]:
    """The flags of every compile of ``suffix`` (a library or the runtime's object) for ``sanitize``."""
    if sanitize is None:
        return FLAGS
    if sanitize not in SANITIZE_FLAGS:
        raise ValueError(f"sanitize must be None or one of {sorted(SANITIZE_FLAGS)}, got {sanitize!r}")
    return FLAGS + SANITIZE_FLAGS[sanitize] + (SANITIZE_DEBUG[suffix],)


def runtime_object(sanitize: str | None = None, configuration: str = "") -> Path:
    """The emulator runtime's object for ``sanitize``, compiled once and cached; return its checked path.

    ``configuration`` is C++ text put before the shim (macros such as ``IC_EMU_UCONTEXT``).
    Raises as :func:`build` does.
    """
    text = "\n".join((configuration + kernel_source.read("cuda_shim.h"), kernel_source.read("cuda_shim_runtime.cpp")))
    return _cached(compiler(), _flags(sanitize, ".o") + RUNTIME_FLAGS, text, ".o")


def build(text: str, sanitize: str | None = None) -> Path:
    """Compile ``text`` (a full emulator source) to a shared library; return its cached, checked path.

    A source that includes the shim (:func:`emulator_source`) is linked with the emulator's
    :func:`runtime_object`, configured by the text before the shim.

    Raises
    ------
    KernelCompileError
        The compiler is missing, rejects the source, or writes no library.
    KernelCacheError
        The library just built does not match its checksum on disk.
    """
    flags = _flags(sanitize, ".so") + LIBRARY_FLAGS
    configuration, shim, _ = text.partition(kernel_source.read("cuda_shim.h"))
    inputs = (runtime_object(sanitize, configuration),) if shim else ()
    return _cached(compiler(), flags, text, ".so", inputs)
