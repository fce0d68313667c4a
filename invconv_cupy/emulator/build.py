"""Compile a kernel family for the CPU: g++ behind ``kernels/cuda_shim.h``, cached by hash.

The shared library for one source string is built once and kept in the cache
directory (``$INVCONV_CUPY_CACHE_DIR``, else ``$XDG_CACHE_HOME/invconv_cupy``,
else ``~/.cache/invconv_cupy``), under ``emulator/<sha256>.so`` where the hash
covers the full source, the flags and the compiler's version. Every process
compiles into its own temporary file and renames it into place, so concurrent
processes never see a half-written library.

``$CXX`` names the compiler (default ``g++``). Every library checks the
alignment of typed accesses (``-fsanitize=alignment``; the shim turns a report
into a launch error). ``sanitize="address"`` adds AddressSanitizer,
``sanitize="thread"`` ThreadSanitizer; such a library loads only into a process
started with ``LD_PRELOAD`` of the compiler's runtime (see :func:`sanitizer_runtime`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

from .. import kernel_source

FLAGS = ("-std=c++20", "-O1", "-fPIC", "-shared", "-pthread", "-fsanitize=alignment")
SANITIZE_FLAGS = {"address": ("-fsanitize=address", "-fno-omit-frame-pointer", "-g"),
                  "thread": ("-fsanitize=thread", "-fno-omit-frame-pointer", "-g")}
_RUNTIMES = {"address": "libasan.so", "thread": "libtsan.so"}


class KernelCompileError(RuntimeError):
    """The host compiler rejected a kernel source; the message carries its log."""


def cache_dir() -> Path:
    """Where compiled kernels are kept (created on first use)."""
    root = os.environ.get("INVCONV_CUPY_CACHE_DIR")
    if root is None:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "invconv_cupy"
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
    """The shim, the family's source, and one launcher per entry point."""
    launchers = "\n".join(f"IC_EMULATOR_ENTRY({name})" for name in entries)
    return "\n".join((kernel_source.read("cuda_shim.h"), family_source, "// generated launchers", launchers, ""))


def build(text: str, sanitize: str | None = None) -> Path:
    """Compile ``text`` (a full emulator source) to a shared library; return its cached path."""
    cxx = compiler()
    if sanitize is not None and sanitize not in SANITIZE_FLAGS:
        raise ValueError(f"sanitize must be None or one of {sorted(SANITIZE_FLAGS)}, got {sanitize!r}")
    flags = FLAGS + SANITIZE_FLAGS.get(sanitize, ())
    key = hashlib.sha256("\0".join((text, " ".join(flags), _compiler_version(cxx))).encode()).hexdigest()
    directory = cache_dir()
    target = directory / f"{key[:32]}.so"
    if target.exists():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as tmp:
        src, lib = Path(tmp) / "kernel.cpp", Path(tmp) / "kernel.so"
        src.write_text(text, encoding="utf-8")
        result = subprocess.run([cxx, *flags, "-o", str(lib), str(src)], capture_output=True, text=True)
        if result.returncode != 0:
            raise KernelCompileError(f"{cxx} failed to compile a kernel for the emulator:\n{result.stderr}")
        os.replace(lib, target)
    return target
