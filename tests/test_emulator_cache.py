"""Fault injection for the emulator's kernel cache: damaged entries, unusable folders, broken compilers, limits.

Each test builds into its own ``tmp_path`` cache. Anything that could crash the
interpreter (loading a damaged library) runs in a child process.
"""

import ctypes
import importlib
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import pytest

from invconv_cupy.emulator import EmulatedFunction, EmulatorDevice
from invconv_cupy.emulator.build import (KernelCacheError, KernelCacheWarning, KernelCompileError, build,
                                         emulator_source, runtime_object)

build_module = importlib.import_module("invconv_cupy.emulator.build")   # the package's `build` is the function

#: A library small enough to compile in a blink; ``answer`` returns 42 (``mov $42, %eax`` in its code).
SOURCE = 'extern "C" int answer(void) { return 42; }\n'
MOV_42 = bytes([0xB8, 42, 0, 0, 0])

_LOAD = """
import ctypes, sys
from invconv_cupy.emulator.build import build
print(ctypes.CDLL(str(build(sys.argv[1]))).answer())
"""


def _entries(cache):
    return sorted((cache / "emulator").glob("*.so"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A cache holding SOURCE's library, copied into each test's cache."""
    cache = tmp_path_factory.mktemp("template")
    env = dict(os.environ, INVCONV_CUPY_CACHE_DIR=str(cache))
    subprocess.run([sys.executable, "-c", _LOAD, SOURCE], env=env, check=True, capture_output=True)
    return cache


@pytest.fixture
def cache(tmp_path, monkeypatch, built):
    """This test's cache (a copy of the built one), selected through $INVCONV_CUPY_CACHE_DIR."""
    shutil.copytree(built, tmp_path / "cache")
    monkeypatch.setenv("INVCONV_CUPY_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _load_in_child(env=None):
    return subprocess.run([sys.executable, "-c", _LOAD, SOURCE], capture_output=True, text=True,
                          env=env or dict(os.environ))


def _truncate(data):
    return data[: len(data) // 2]


def _zero(data):
    return bytes(len(data))


def _wrong_constant(data):
    # A silent wrong answer: the library still loads and runs, returning 7.
    return data.replace(MOV_42, bytes([0xB8, 7, 0, 0, 0]))


def _illegal_instruction(data):
    # ud2 where the function's first instruction was: SIGILL when it runs.
    return data.replace(MOV_42, bytes([0x0F, 0x0B, 0x0F, 0x0B, 0x90]))


def _flipped_byte(data):
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


@pytest.mark.parametrize("damage", [_truncate, _zero, _wrong_constant, _illegal_instruction, _flipped_byte],
                         ids=lambda f: f.__name__.strip("_"))
def test_a_damaged_entry_is_rebuilt_transparently(cache, damage):
    (entry,) = _entries(cache)
    original = entry.read_bytes()
    assert MOV_42 in original
    entry.write_bytes(damage(original))
    done = _load_in_child()
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["42"] and done.stderr == ""
    (rebuilt,) = _entries(cache)
    assert rebuilt.read_bytes() == original


def test_a_second_failure_names_the_entry(cache, monkeypatch):
    """The rebuilt library is damaged on disk too (a failing disk): one clear error naming the path."""
    (entry,) = _entries(cache)
    entry.write_bytes(_truncate(entry.read_bytes()))
    install = build_module._install

    def install_then_damage(*args):
        path = install(*args)
        path.write_bytes(_zero(path.read_bytes()))
        return path

    monkeypatch.setattr(build_module, "_install", install_then_damage)
    with pytest.raises(KernelCacheError, match=f"{cache / 'emulator'}/.*\\.so.* damaged"):
        build(SOURCE)


#: An emulator kernel: linked with the runtime's object.
KERNEL = 'extern "C" __global__ void count(int* out) { out[threadIdx.x] = 1 + (int)threadIdx.x; }\n'


def test_kernel_libraries_link_one_runtime_object_which_is_healed(tmp_path, monkeypatch):
    """The runtime is compiled once per cache; a damaged object is rebuilt, bit for bit, when next needed."""
    shared = runtime_object()       # this session's, from the configured cache
    (tmp_path / "emulator").mkdir()
    copy = tmp_path / "emulator" / shared.name
    shutil.copy(shared, copy)
    monkeypatch.setenv("INVCONV_CUPY_CACHE_DIR", str(tmp_path))
    first = build(emulator_source(KERNEL, ["count"]))
    assert list((tmp_path / "emulator").glob("*.o")) == [copy]      # linked, not compiled again
    copy.write_bytes(_truncate(copy.read_bytes()))
    second = build(emulator_source(KERNEL + "// another library\n", ["count"]))
    assert list((tmp_path / "emulator").glob("*.o")) == [copy] and copy.read_bytes() == shared.read_bytes()
    for library in (first, second):
        out = np.zeros(5, np.int32)
        EmulatedFunction(EmulatorDevice(), ctypes.CDLL(str(library)), "count")((1,), (5,), (out,))
        np.testing.assert_array_equal(out, np.arange(1, 6))


@pytest.mark.parametrize("where", ["a file", "below a file", "cannot be created", "read-only"])
def test_an_unusable_cache_folder_falls_back_to_a_private_temporary_one(tmp_path, monkeypatch, where):
    (tmp_path / "file").write_text("not a folder")
    folder = {
        "a file": tmp_path / "file",
        "below a file": tmp_path / "file" / "cache",
        "cannot be created": "/proc/invconv_cupy_cache",   # the kernel refuses even root
        "read-only": tmp_path / "ro",
    }[where]
    if where == "read-only":
        (tmp_path / "ro" / "emulator").mkdir(parents=True)
        os.chmod(tmp_path / "ro" / "emulator", 0o555)
        if os.access(tmp_path / "ro" / "emulator", os.W_OK):
            pytest.skip("this user (root) can write into a read-only folder")
    monkeypatch.setenv("INVCONV_CUPY_CACHE_DIR", str(folder))
    monkeypatch.setattr(build_module, "_private", build_module._PrivateFolder())   # a fresh process's state
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    unique = SOURCE + f"// {where} {time.time_ns()}\n"
    with pytest.warns(KernelCacheWarning, match=f"{folder}.*cannot be used.*private temporary folder") as caught:
        path = build(unique)
    assert len(caught) == 1
    assert path.parent.parent == tmp_path / "tmp"
    assert os.stat(path.parent).st_mode & 0o077 == 0   # private: only this user
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # no second warning, and a cache hit
        assert build(unique) == path
        assert build(unique + "// another\n").parent == path.parent
    assert (tmp_path / "file").read_text() == "not a folder"


def test_empty_cache_variable_means_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("INVCONV_CUPY_CACHE_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    path = build(SOURCE + "// empty variable\n")
    assert path.parent == tmp_path / "xdg" / "invconv_cupy" / "emulator"
    assert list((tmp_path / "cwd").iterdir()) == []


def test_stale_build_folders_are_removed(cache):
    stale, fresh = cache / "emulator" / ".build-killed", cache / "emulator" / ".build-running"
    for folder in (stale, fresh):
        folder.mkdir()
        (folder / "kernel.cpp").write_text(SOURCE)
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    build(SOURCE + "// stale\n")
    assert not stale.exists()
    assert fresh.exists()      # perhaps another process's compile: kept


@pytest.mark.parametrize("compiler", ["/bin/true", "garbage writer"])
def test_a_compiler_that_writes_no_library_is_named(tmp_path, cache, monkeypatch, compiler):
    if compiler == "garbage writer":
        script = tmp_path / "fake-c++"
        script.write_text('#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = -o ] && echo "not a library" > "$2"; shift; done\n')
        script.chmod(0o755)
        compiler = str(script)
    monkeypatch.setenv("CXX", compiler)
    with pytest.raises(KernelCompileError, match=f"\\$CXX.*{compiler}.*shared library"):
        build(SOURCE + "// no library\n")
    assert not list((cache / "emulator").glob(".build-*"))


def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


def test_a_file_size_limit_is_a_clear_error(tmp_path):
    env = dict(os.environ, INVCONV_CUPY_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", _LOAD, SOURCE + "// limited\n"], env=env, capture_output=True,
                          text=True, preexec_fn=_limit_file_size)
    assert done.returncode == 1
    assert re.search(r"KernelCompileError: \S+ failed to compile a kernel for the emulator \(this process has a "
                     r"file size limit of 4096 bytes\)", done.stderr), done.stderr
    assert not list((tmp_path / "cache" / "emulator").glob(".build-*"))


@pytest.mark.parametrize("value", ["abc", "1.5", "-1", str(2**64), "0x10"])
def test_bad_emulate_seed_is_named(monkeypatch, value):
    monkeypatch.setenv("INVCONV_EMULATE_SEED", value)
    with pytest.raises(ValueError, match=f"INVCONV_EMULATE_SEED must be an integer from 0 to 2\\*\\*64 - 1, got '{value}'"):
        EmulatorDevice()


@pytest.mark.parametrize("value, seed", [("", None), ("0", 0), (" 42 ", 42), (str(2**64 - 1), 2**64 - 1)])
def test_good_emulate_seed(monkeypatch, value, seed):
    monkeypatch.setenv("INVCONV_EMULATE_SEED", value)
    assert EmulatorDevice().seed == seed


def test_bad_sanitize_variable_is_named(monkeypatch):
    monkeypatch.setenv("INVCONV_EMULATE_SANITIZE", "memory")
    with pytest.raises(ValueError, match="INVCONV_EMULATE_SANITIZE must be unset or one of 'address', 'thread', "
                                         "got 'memory'"):
        EmulatorDevice()
