"""Fault injection for invconv-deblur: overflowing results, memory and file-size limits, a broken CuPy,
third-party warnings, signals at any moment, and the mode of output files.

Crashes, signals and resource limits run in child processes (``resource.setrlimit``
in the child); everything else in-process.
"""

import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from cli_util import listing, run_cli, stable_quadrant_psf, synthetic_image

PROG = "invconv-deblur"


def _console_script():
    import shutil

    found = shutil.which(PROG, path=str(Path(sys.executable).parent)) or shutil.which(PROG)
    if found is None:
        pytest.skip("the invconv-deblur console script is not installed (pip install -e .)")
    return found


def _save_png(path, image):
    from PIL import Image

    Image.fromarray(np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(path)


def _error_line(err):
    """The stderr of a failed run: notes may come first, the error is the last line and the only error."""
    lines = err.splitlines()
    assert lines and lines[-1].startswith(f"{PROG}: error: "), err
    assert all(line.startswith(f"{PROG}: note: not using exact") for line in lines[:-1]), err
    return lines[-1]


# ---------------------------------------------------------------- never a wrong picture


def _huge_taps(d, rng):
    psf = np.zeros((3, 3))
    psf[1, 1] = psf[2, 2] = 1e308
    np.save(d / "psf.npy", psf)
    return ["--psf", d / "psf.npy"]


def _huge_lambda(d, rng):
    return ["--gaussian", "1", "--lam", "1e308"]


@pytest.mark.parametrize("make_args", [_huge_taps, _huge_lambda], ids=["taps near 1e308", "--lam 1e308"])
@pytest.mark.parametrize("suffix", [".npy", ".png"])
def test_non_finite_results_are_not_written(tmp_path, capsys, rng, make_args, suffix):
    image = synthetic_image(rng, shape=(24, 32))
    if suffix == ".npy":
        np.save(tmp_path / f"in{suffix}", image)
    else:
        _save_png(tmp_path / f"in{suffix}", image)
    args = make_args(tmp_path, rng)
    before = listing(tmp_path)
    code, out, err = run_cli(capsys, "apply", tmp_path / f"in{suffix}", *args, "-o", tmp_path / f"out{suffix}")
    assert code == 2
    assert re.search(r"out\.(npy|png) not written: \d+ of \d+ values of the result are NaN or infinite.*"
                     r"try --method tikhonov", _error_line(err))
    assert "Warning" not in err     # the overflow warnings of NumPy and SciPy are not printed
    assert listing(tmp_path) == before


def test_float16_overflow_is_not_written(tmp_path, capsys, rng):
    """The result fits float64 but not the input's float16: refused instead of written as inf."""
    image = (30000 + 20000 * synthetic_image(rng, shape=(16, 16))).astype(np.float16)
    np.save(tmp_path / "in.npy", image)
    np.save(tmp_path / "half.npy", np.array([[0.5]]))    # the exact inverse doubles every pixel
    code, out, err = run_cli(capsys, "apply", tmp_path / "in.npy", "--psf", tmp_path / "half.npy",
                             "-o", tmp_path / "out.npy")
    assert code == 2
    assert re.search(r"out\.npy not written: the result reaches [\d.e+]+, more than float16 holds \(65504\)",
                     _error_line(err))
    assert not (tmp_path / "out.npy").exists()
    np.save(tmp_path / "small.npy", (image / 4).astype(np.float16))    # the same blur on values that fit
    code, _, err = run_cli(capsys, "apply", tmp_path / "small.npy", "--psf", tmp_path / "half.npy",
                           "-o", tmp_path / "out.npy")
    assert code == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), (image / 4).astype(np.float32) * 2, rtol=1e-3)


@pytest.mark.parametrize("gain", [1e200, -1e200])
def test_saturated_integer_pictures_are_not_written(tmp_path, capsys, rng, gain):
    """A finite result far outside the 8-bit range would clip to an all-white (or all-black) picture."""
    _save_png(tmp_path / "in.png", synthetic_image(rng, shape=(16, 24)))
    np.save(tmp_path / "tiny.npy", np.array([[1 / gain]]))
    code, _, err = run_cli(capsys, "apply", tmp_path / "in.png", "--psf", tmp_path / "tiny.npy", "--method", "exact",
                           "-o", tmp_path / "out.png")
    assert code == 2
    assert re.search(r"out\.png not written: 100% of the result lies more than a full range outside.*"
                     r"as uint8 it would be a saturated picture", _error_line(err))
    assert not (tmp_path / "out.png").exists()


def test_a_mild_overshoot_is_still_written(tmp_path, capsys, rng):
    """Ringing slightly outside [0, 1] is normal for deblurring: clipped and written."""
    image = synthetic_image(rng, shape=(16, 24))
    _save_png(tmp_path / "in.png", image)
    np.save(tmp_path / "gain.npy", np.array([[1 / 1.6]]))
    code, _, err = run_cli(capsys, "apply", tmp_path / "in.png", "--psf", tmp_path / "gain.npy",
                           "-o", tmp_path / "out.png")
    assert code == 0, err
    from invconv_cupy.cli.images import read_image

    np.testing.assert_allclose(read_image(tmp_path / "out.png").data[0],
                               np.clip(np.rint(image * 255) / 255 * 1.6, 0, 1), atol=1 / 255)


# ---------------------------------------------------------------- memory


@pytest.mark.parametrize("blur", [["--gaussian", "1e6"], ["--motion", "1e9", "0"]])
def test_a_huge_psf_is_out_of_memory_in_one_line(tmp_path, capsys, rng, blur):
    _save_png(tmp_path / "in.png", synthetic_image(rng, shape=(16, 16)))
    code, out, err = run_cli(capsys, "apply", tmp_path / "in.png", *blur, "-o", tmp_path / "out.png")
    assert code == 2
    assert err.splitlines() == [err.strip()]
    assert re.fullmatch(rf"{PROG}: error: out of memory: Unable to allocate [\d.]+ [TGP]iB for an array with shape "
                        r"\(.*\) and data type float64; try a smaller image or PSF", err.strip())
    assert listing(tmp_path) == ["in.png"]


_UNDER_MEMORY_LIMIT = """
import resource, sys
import invconv_cupy.cli.apply, scipy.sparse.linalg   # the command's imports, before the limit
from invconv_cupy.cli.main import main
size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (300 << 20), resource.RLIM_INFINITY))
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_valid_picture_too_large_for_the_memory_limit(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((4000, 4000), 128, np.uint8)).save(tmp_path / "large.png")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", _UNDER_MEMORY_LIMIT, "apply", str(tmp_path / "large.png"),
                           "--gaussian", "1", "--device", "cpu", "-o", str(tmp_path / "out.png")],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 2, done.stderr
    assert re.search(r"error: out of memory: Unable to allocate \d+\. MiB", _error_line(done.stderr))
    assert listing(tmp_path) == ["large.png"]


def _limit_file_size():
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))


def test_a_file_size_limit_leaves_no_partial_output(tmp_path, rng):
    psf = stable_quadrant_psf(rng, "TL")
    np.save(tmp_path / "psf.npy", psf)
    np.save(tmp_path / "in.npy", synthetic_image(rng, shape=(128, 128)))    # 128 KiB as float64
    done = subprocess.run([sys.executable, "-m", "invconv_cupy.cli", "apply", "in.npy", "--psf", "psf.npy",
                           "-o", "out.npy"], cwd=tmp_path, capture_output=True, text=True,
                          preexec_fn=_limit_file_size)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"{PROG}: error: cannot write out.npy: the file reached this process's "
                                        "file size limit (65536 bytes, ulimit -f)"]
    assert listing(tmp_path) == ["in.npy", "psf.npy"]


# ---------------------------------------------------------------- device


_HOME_IS_A_FILE = """
import sys
from invconv_cupy.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("device", ["auto", "cuda"])
def test_cupy_that_cannot_be_imported_means_no_gpu(tmp_path, rng, device):
    """``import cupy`` raises OSError when it cannot create ~/.cupy (a service account's missing home)."""
    pytest.importorskip("cupy")
    (tmp_path / "home").write_text("a file, not a folder")
    np.save(tmp_path / "in.npy", synthetic_image(rng, shape=(12, 12)))
    np.save(tmp_path / "psf.npy", stable_quadrant_psf(rng, "TL"))
    env = dict(os.environ, HOME=str(tmp_path / "home"))
    env.pop("CUPY_CACHE_DIR", None)
    done = subprocess.run([sys.executable, "-c", _HOME_IS_A_FILE, "apply", "in.npy", "--psf", "psf.npy",
                           "-o", "out.npy", "--device", device], cwd=tmp_path, capture_output=True, text=True, env=env)
    if device == "auto":
        assert done.returncode == 0, done.stderr
        assert done.stderr == "" and "in.npy -> out.npy: " in done.stdout
    else:
        assert done.returncode == 2
        assert re.fullmatch(rf"{PROG}: error: --device cuda: no CUDA GPU can be used: CuPy cannot be imported "
                            r"\((NotADirectoryError|FileExistsError|FileNotFoundError): .*\)\n", done.stderr)
        assert not (tmp_path / "out.npy").exists()


# ---------------------------------------------------------------- warnings


@pytest.fixture
def noisy_libraries(monkeypatch):
    """27 third-party warnings during a run (as an overflowing NumPy computation gives)."""
    from invconv_cupy.cli import methods

    real = methods.choose_lambda

    def choose_lambda_with_warnings(*args):
        for k in range(27):
            warnings.warn_explicit(f"overflow encountered in matmul ({k})", RuntimeWarning, "numpy_backend.py", k)
        return real(*args)

    monkeypatch.setattr(methods, "choose_lambda", choose_lambda_with_warnings)
    import invconv_cupy.cli.apply

    monkeypatch.setattr(invconv_cupy.cli.apply, "choose_lambda", choose_lambda_with_warnings)


@pytest.fixture
def blurred(tmp_path, rng):
    np.save(tmp_path / "in.npy", synthetic_image(rng, shape=(16, 16)))
    return tmp_path / "in.npy"


def test_third_party_warnings_are_one_line(tmp_path, capsys, noisy_libraries, blurred):
    code, _, err = run_cli(capsys, "apply", blurred, "--gaussian", "1", "-o", tmp_path / "out.npy")
    assert code == 0, err
    notes = [line for line in err.splitlines() if "warning" in line]
    assert notes == [f"{PROG}: note: 27 warnings from the libraries used (first: RuntimeWarning: overflow "
                     "encountered in matmul (0)); -v shows them all"]


def test_verbose_shows_every_warning(tmp_path, capsys, noisy_libraries, blurred):
    code, _, err = run_cli(capsys, "apply", blurred, "--gaussian", "1", "-o", tmp_path / "out.npy", "-v")
    assert code == 0, err
    shown = [line for line in err.splitlines() if line.startswith(f"{PROG}: warning: RuntimeWarning")]
    assert [line.split("(")[1].split(")")[0] for line in shown] == [str(k) for k in range(27)]


def test_an_error_stays_one_line_despite_warnings(tmp_path, capsys, noisy_libraries, blurred):
    code, _, err = run_cli(capsys, "apply", blurred, "--gaussian", "1", "--lam", "1e308", "-o", tmp_path / "o.npy")
    assert code == 2
    _error_line(err)


# ---------------------------------------------------------------- signals


@pytest.fixture
def slow_job(tmp_path, rng):
    """An apply run of about a second (tikhonov on a 160 x 160 picture); returns its argv tail."""
    np.save(tmp_path / "in.npy", synthetic_image(rng, shape=(160, 160)))
    return ["apply", "in.npy", "--gaussian", "1.5", "--rtol", "1e-9", "-o", "out.npy", "--force"]


_ARMED = """
import os, signal, sys, threading
from invconv_cupy.cli import program

delay, sys.argv = float(sys.argv[1]), ["invconv-deblur", *sys.argv[2:]]
install = program.exit_cleanly_on_signals

def install_then_arm(prog):
    # The signal comes `delay` seconds after the handlers are installed: during the imports
    # of NumPy, SciPy and Pillow, the validation, the computation or the writing.
    install(prog)
    threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT)).start()

program.exit_cleanly_on_signals = install_then_arm
sys.exit(program.run_program())
"""


def _no_temporary_files(folder):
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_ctrl_c_at_any_moment_exits_130_in_one_line(tmp_path, slow_job):
    outcomes = []
    for delay in (0.0, 0.002, 0.01, 0.03, 0.06, 0.12, 0.25, 0.5):
        done = subprocess.run([sys.executable, "-c", _ARMED, str(delay), *slow_job], cwd=tmp_path,
                              capture_output=True, text=True)
        assert done.returncode == 130, (delay, done.stderr)
        assert done.stderr.splitlines()[-1:] == [f"{PROG}: interrupted"], (delay, done.stderr)
        assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) <= 2, (delay, done.stderr)
        assert _no_temporary_files(tmp_path)
        outcomes.append((tmp_path / "out.npy").exists())
    assert not outcomes[0]


def test_ctrl_c_on_the_console_script_never_shows_our_traceback(tmp_path, slow_job):
    """Signals from the first millisecond on. Before Python has set itself up (standard streams,
    site initialisation) and loaded the entry module, a signal can only end Python itself; after
    that, the program's handler answers."""
    script = _console_script()
    for delay in (0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.13, 0.16, 0.2, 0.3):
        child = subprocess.Popen([script, *slow_job], cwd=tmp_path, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate()
        if child.returncode == 0:        # a fast machine: finished before the signal
            assert np.load(tmp_path / "out.npy").shape == (160, 160)
        elif child.returncode == 130:
            assert err.splitlines()[-1:] == [f"{PROG}: interrupted"] and "Traceback" not in err, (delay, err)
        elif "Traceback" in err:
            # Only in Python's own start-up or while loading the entry module, before the handlers exist.
            ours = re.findall(r'File "[^"]*invconv_cupy/([^"]*)"', err)
            assert set(ours) <= {"__init__.py", "cli/__init__.py", "cli/program.py", "cli/interrupts.py"}, (delay, err)
            assert "numpy" not in err, (delay, err)
        else:
            assert child.returncode == -signal.SIGINT and err == "", (delay, child.returncode, err)
        assert _no_temporary_files(tmp_path)


_SLOW_WRITE = """
import sys, time
import numpy as np
from invconv_cupy.cli.program import run_program

real_save = np.save

def slow_save(handle, array, **kwargs):
    handle.write(b"half of a file")
    handle.flush()
    print("writing", flush=True)
    time.sleep(30)
    real_save(handle, array, **kwargs)

np.save = slow_save
sys.argv = ["invconv-deblur", *sys.argv[1:]]
sys.exit(run_program())
"""


@pytest.mark.parametrize("signum, code, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_a_signal_during_a_write_removes_the_temporary_file(tmp_path, rng, signum, code, word):
    np.save(tmp_path / "in.npy", synthetic_image(rng, shape=(32, 32)))
    np.save(tmp_path / "psf.npy", stable_quadrant_psf(rng, "TL"))
    (tmp_path / "out.npy").write_bytes(b"the previous result")
    child = subprocess.Popen([sys.executable, "-c", _SLOW_WRITE, "apply", "in.npy", "--psf", "psf.npy", "-o", "out.npy",
                              "--force"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "writing\n"
    assert not _no_temporary_files(tmp_path)    # the fault is injected where a temporary file exists
    child.send_signal(signum)
    _, err = child.communicate(timeout=20)
    assert child.returncode == code
    assert err.splitlines() == [f"{PROG}: {word}"]
    assert listing(tmp_path) == ["in.npy", "out.npy", "psf.npy"]
    assert (tmp_path / "out.npy").read_bytes() == b"the previous result"


# ---------------------------------------------------------------- file modes


@pytest.fixture
def umask():
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
@pytest.mark.parametrize("suffix", [".npy", ".png"])
def test_outputs_get_the_mode_the_umask_gives(tmp_path, capsys, rng, umask, mask, suffix):
    psf = stable_quadrant_psf(rng, "TL")
    np.save(tmp_path / "psf.npy", psf)
    image = synthetic_image(rng, shape=(16, 16))
    if suffix == ".npy":
        np.save(tmp_path / "in.npy", image)
    else:
        _save_png(tmp_path / "in.png", image)
    umask(mask)
    code, _, err = run_cli(capsys, "apply", tmp_path / f"in{suffix}", "--psf", tmp_path / "psf.npy",
                           "-o", tmp_path / "new" / f"out{suffix}")
    assert code == 0, err
    assert (tmp_path / "new" / f"out{suffix}").stat().st_mode & 0o777 == 0o666 & ~mask


def test_fit_output_and_a_replaced_file_keep_cp_modes(tmp_path, capsys, rng, umask):
    """A new file: 0666 less the umask; a file replaced with --force keeps its mode, as cp does."""
    sharp = synthetic_image(rng, shape=(16, 16))
    np.save(tmp_path / "s.npy", sharp)
    np.save(tmp_path / "b.npy", sharp * 0.9)
    code, _, err = run_cli(capsys, "fit", "--sharp", tmp_path / "s.npy", "--blurred", tmp_path / "b.npy",
                           "--size", 1, "--orientation", "TL", "-o", tmp_path / "k.npy")
    assert code == 0, err
    assert (tmp_path / "k.npy").stat().st_mode & 0o777 == 0o644
    os.chmod(tmp_path / "k.npy", 0o640)
    code, _, err = run_cli(capsys, "fit", "--sharp", tmp_path / "s.npy", "--blurred", tmp_path / "b.npy",
                           "--size", 1, "--orientation", "TL", "-o", tmp_path / "k.npy", "--force")
    assert code == 0, err
    assert (tmp_path / "k.npy").stat().st_mode & 0o777 == 0o640
    np.testing.assert_allclose(np.load(tmp_path / "k.npy"), [[0.9]], rtol=1e-4)
