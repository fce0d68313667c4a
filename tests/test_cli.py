"""invconv-deblur end to end: apply (exact, tikhonov), fit, demo, the console script, every error path."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import convolve2d

from cli_util import listing, psnr, run_cli, stable_quadrant_psf, synthetic_image
from invconv_cupy.cli.device import cuda_problem
from invconv_cupy.cli.images import read_image

ORIENTATIONS = ("TL", "TR", "BL", "BR")


def _blur(image, psf):
    """``convolve2d(..., mode="same")`` per channel of an (H, W) or (H, W, C) image."""
    if image.ndim == 2:
        return convolve2d(image, psf, mode="same")
    return np.stack([convolve2d(image[..., c], psf, mode="same") for c in range(image.shape[-1])], axis=-1)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_exact_recovers_noiseless_npy(tmp_path, capsys, rng, orientation):
    sharp = synthetic_image(rng, channels=3)
    psf = stable_quadrant_psf(rng, orientation)
    np.save(tmp_path / "psf.npy", psf)
    np.save(tmp_path / "blurred.npy", _blur(sharp, psf).astype(np.float32))
    code, out, err = run_cli(
        capsys, "apply", tmp_path / "blurred.npy", "--psf", tmp_path / "psf.npy", "--method", "exact",
        "-o", tmp_path / "out.npy",
    )
    assert code == 0, err
    assert f"exact ({orientation}, zero boundary)" in out
    result = np.load(tmp_path / "out.npy")
    assert result.dtype == np.float32 and result.shape == sharp.shape
    assert psnr(sharp, result) > 50


def test_exact_recovers_noiseless_16bit_tiff(tmp_path, capsys, rng):
    import tifffile

    sharp = synthetic_image(rng, channels=3)
    psf = stable_quadrant_psf(rng, rng.choice(ORIENTATIONS))
    np.savetxt(tmp_path / "psf.csv", psf, delimiter=",")
    blurred = np.rint(_blur(sharp, psf) * 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "blurred.tif", blurred, photometric="rgb")
    code, _, err = run_cli(capsys, "apply", tmp_path / "blurred.tif", "--psf", tmp_path / "psf.csv",
                           "--method", "exact", "--boundary", "zero", "-o", tmp_path / "out.tif")
    assert code == 0, err
    result = tifffile.imread(tmp_path / "out.tif")
    assert result.dtype == np.uint16 and result.shape == sharp.shape
    assert psnr(sharp, result / 65535) > 50


def test_tikhonov_gains_psnr_on_noisy_blur(tmp_path, capsys, rng):
    from PIL import Image

    sharp = synthetic_image(rng)
    blurred = _blur(sharp, np.outer(*[np.exp(-0.5 * np.arange(-3, 4) ** 2 / 1.2**2)] * 2) / 2.0 / np.pi / 1.2**2)
    noisy = np.clip(blurred + 0.01 * rng.standard_normal(sharp.shape), 0, 1)
    Image.fromarray(np.rint(noisy * 255).astype(np.uint8)).save(tmp_path / "noisy.png")
    code, out, err = run_cli(capsys, "apply", tmp_path / "noisy.png", "--gaussian", 1.2, "-o", tmp_path / "out.png")
    assert code == 0, err
    assert "tikhonov (lambda" in out
    assert "default method: tikhonov, exact impossible (the PSF's support is not inside one quadrant" in out
    result = read_image(tmp_path / "out.png")
    assert result.dtype == np.uint8
    before = psnr(sharp, read_image(tmp_path / "noisy.png").data[0])
    after = psnr(sharp, result.data[0])
    assert after > before + 1.0, (before, after)


@pytest.mark.parametrize("precondition", ["none", "causal"])
def test_tikhonov_preconditioner_reaches_the_same_answer(tmp_path, capsys, rng, precondition):
    sharp = synthetic_image(rng)
    psf = stable_quadrant_psf(rng, rng.choice(ORIENTATIONS))
    np.save(tmp_path / "psf.npy", psf)
    np.save(tmp_path / "b.npy", _blur(sharp, psf) + 0.005 * rng.standard_normal(sharp.shape))
    code, out, err = run_cli(capsys, "apply", tmp_path / "b.npy", "--psf", tmp_path / "psf.npy", "--lam", "0.01",
                             "--precondition", precondition, "--rtol", "1e-8", "-o", tmp_path / "out.npy")
    assert code == 0, err
    assert ("causal preconditioner" in out) == (precondition == "causal")
    from invconv_cupy.cli.device import resolve_device
    from invconv_cupy.cli.methods import deblur_tikhonov

    blurred = np.load(tmp_path / "b.npy")[None]
    reference = deblur_tikhonov(blurred, psf, 0.01, resolve_device("cpu"), rtol=1e-10, maxiter=2000)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), reference.image[0], atol=1e-5)


def test_fit_recovers_a_known_kernel_and_apply_uses_it(tmp_path, capsys, rng):
    orientation = rng.choice(ORIENTATIONS)
    psf = stable_quadrant_psf(rng, orientation, kh=3, kw=3)
    sharp = synthetic_image(rng)
    np.save(tmp_path / "sharp.npy", sharp)
    np.save(tmp_path / "blurred.npy", _blur(sharp, psf))
    code, out, err = run_cli(capsys, "fit", "--sharp", tmp_path / "sharp.npy", "--blurred", tmp_path / "blurred.npy",
                             "--size", 3, "-o", tmp_path / "kernel.npy")
    assert code == 0, err
    assert f"orientation {orientation}" in out
    kernel = np.load(tmp_path / "kernel.npy")
    assert kernel.shape == psf.shape
    np.testing.assert_allclose(kernel, psf, rtol=0, atol=1e-5)
    code, out, err = run_cli(capsys, "apply", tmp_path / "blurred.npy", "--psf", tmp_path / "kernel.npy",
                             "--method", "exact", "-o", tmp_path / "restored.npy")
    assert code == 0, err
    assert psnr(sharp, np.load(tmp_path / "restored.npy")) > 50


def test_folder_input_shows_progress_and_keeps_names(tmp_path, capsys, rng):
    from PIL import Image

    psf = stable_quadrant_psf(rng, "TL")
    (tmp_path / "in").mkdir()
    for name in ("a.png", "b.png"):
        blurred = _blur(synthetic_image(rng, channels=3), psf)
        Image.fromarray(np.rint(blurred * 255).astype(np.uint8)).save(tmp_path / "in" / name)
    np.save(tmp_path / "psf.npy", psf)
    code, out, err = run_cli(capsys, "apply", tmp_path / "in", "--psf", tmp_path / "psf.npy", "-o", tmp_path / "out")
    assert code == 0, err
    assert "deblurring" in err and "2/2" in err  # the tqdm bar
    assert listing(tmp_path / "out") == ["a.png", "b.png"]
    assert read_image(tmp_path / "out" / "a.png").channels == 3


def test_single_input_to_a_new_folder(tmp_path, capsys, rng):
    psf = stable_quadrant_psf(rng, "TR")
    np.save(tmp_path / "psf.npy", psf)
    np.save(tmp_path / "b.npy", _blur(synthetic_image(rng), psf))
    code, _, err = run_cli(capsys, "apply", tmp_path / "b.npy", "--psf", tmp_path / "psf.npy",
                           "-o", f"{tmp_path / 'new'}/")
    assert code == 0, err
    assert listing(tmp_path / "new") == ["b.npy"]


def test_demo(tmp_path, capsys):
    code, out, err = run_cli(capsys, "demo", "--out", tmp_path / "demo", "--downsample", 4)
    assert code == 0, err
    psnrs = {}
    for line in out.splitlines():
        row = re.match(r"^([a-z-]+) .*?([0-9.]+) +[0-9.]+ +[0-9.]+ +[0-9.]+$", line)
        if row:
            psnrs[row.group(1)] = float(row.group(2))  # PSNR on the whole frame
    assert set(psnrs) == {"blurred", "default", "exact", "tikhonov", "wiener", "richardson-lucy"}, out
    # Before: the default was exact, the worst of ours on the demo's own noisy picture.
    assert psnrs["default"] == psnrs["tikhonov"] > psnrs["exact"]
    assert psnrs["tikhonov"] > psnrs["blurred"] + 5
    assert re.search(r"^default: tikhonov", out, flags=re.M), out
    assert listing(tmp_path / "demo") == ["blurred.png", "comparison.png", "psf.npy", "sharp.png"]
    comparison = read_image(tmp_path / "demo" / "comparison.png")
    assert comparison.data.shape == (1, 2 * 96, 4 * 96)
    code, _, err = run_cli(capsys, "demo", "--out", tmp_path / "demo", "--downsample", 4)
    assert code == 2 and "--force" in err


def _console_script():
    found = shutil.which("invconv-deblur", path=str(Path(sys.executable).parent)) or shutil.which("invconv-deblur")
    if found is None:
        pytest.skip("the invconv-deblur console script is not installed (pip install -e .)")
    return found


def test_console_script_end_to_end(tmp_path, rng):
    sharp = synthetic_image(rng)
    psf = stable_quadrant_psf(rng, "BR")
    np.save(tmp_path / "psf.npy", psf)
    np.save(tmp_path / "b.npy", _blur(sharp, psf))
    done = subprocess.run([_console_script(), "apply", "b.npy", "--psf", "psf.npy", "-o", "x.npy"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert psnr(sharp, np.load(tmp_path / "x.npy")) > 50
    done = subprocess.run([_console_script(), "apply", "b.npy", "--psf", "psf.npy", "-o", "x.npy"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["invconv-deblur: error: output x.npy exists; use --force to overwrite it"]


def test_python_m_and_help():
    done = subprocess.run([sys.executable, "-m", "invconv_cupy.cli", "apply", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    assert "convolve2d(sharp, psf" in done.stdout and "--method" in done.stdout
    done = subprocess.run([sys.executable, "-m", "invconv_cupy.cli", "apply", "x.png"], capture_output=True, text=True)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr


# ---------------------------------------------------------------- error paths


@pytest.fixture
def files(tmp_path, rng):
    """A valid blurred image, PSF and sharp image to break one at a time."""
    sharp = synthetic_image(rng)
    psf = stable_quadrant_psf(rng, "TL")
    np.save(tmp_path / "psf.npy", psf)
    np.save(tmp_path / "b.npy", _blur(sharp, psf))
    np.save(tmp_path / "s.npy", sharp)
    return tmp_path


def _prepare(case, d):
    """Make the bad input for ``case``; return the argv."""
    ok = ["apply", d / "b.npy", "--psf", d / "psf.npy", "-o", d / "out.npy"]
    if case == "missing input":
        return ["apply", d / "nope.npy", "--psf", d / "psf.npy", "-o", d / "out.npy"]
    if case == "missing input, non-causal psf":
        return ["apply", d / "nope.npy", "--gaussian", "1", "-o", d / "out.npy"]
    if case == "unreadable input":
        (d / "bad.png").write_bytes(b"\x89PNG garbage")
        return ["apply", d / "bad.png", "--psf", d / "psf.npy", "-o", d / "out.png"]
    if case == "one bad input among several":
        (d / "bad.npy").write_bytes(b"garbage")
        return ["apply", d / "b.npy", d / "bad.npy", "--psf", d / "psf.npy", "-o", d / "outdir"]
    if case == "missing psf":
        return ["apply", d / "b.npy", "--psf", d / "nope.npy", "-o", d / "out.npy"]
    if case == "psf with nan":
        np.save(d / "nan.npy", np.array([[0.0, np.nan, 1.0]]))
        return ["apply", d / "b.npy", "--psf", d / "nan.npy", "-o", d / "out.npy"]
    if case == "psf with inf (csv)":
        (d / "inf.csv").write_text("0,0,0\n0,1,inf\n0,0,0\n")
        return ["apply", d / "b.npy", "--psf", d / "inf.csv", "-o", d / "out.npy"]
    if case == "psf of even shape":
        np.save(d / "even.npy", np.ones((2, 2)))
        return ["apply", d / "b.npy", "--psf", d / "even.npy", "-o", d / "out.npy"]
    if case == "psf of 3 dimensions":
        np.save(d / "cube.npy", np.ones((3, 3, 3)))
        return ["apply", d / "b.npy", "--psf", d / "cube.npy", "-o", d / "out.npy"]
    if case == "psf text unparsable":
        (d / "p.txt").write_text("1 2\nthree 4\n")
        return ["apply", d / "b.npy", "--psf", d / "p.txt", "-o", d / "out.npy"]
    if case == "existing output without --force":
        np.save(d / "out.npy", np.zeros(1))
        return ok
    if case == "exact with a non-causal psf":
        return ["apply", d / "b.npy", "--gaussian", "1", "--method", "exact", "-o", d / "out.npy"]
    if case == "exact with an unstable psf":
        return ["apply", d / "b.npy", "--motion", "5", "0", "--method", "exact", "-o", d / "out.npy"]
    if case == "exact with the wrong orientation":
        return ok + ["--method", "exact", "--orientation", "BR"]
    if case == "negative lambda":
        return ok + ["--lam", "-1"]
    if case == "lam with exact":
        return ok + ["--method", "exact", "--lam", "0.1"]
    if case == "usage: no psf":
        return ["apply", d / "b.npy", "-o", d / "out.npy"]
    if case == "usage: bad number":
        return ok + ["--lam", "abc"]
    if case == "usage: no command":
        return []
    if case == "output cannot keep the dtype":
        return ["apply", d / "b.npy", "--psf", d / "psf.npy", "-o", d / "out.png"]
    if case == "cuda without a gpu":
        return ok + ["--device", "cuda"]
    if case == "fit: different shapes":
        np.save(d / "small.npy", np.zeros((40, 64)))
        return ["fit", "--sharp", d / "s.npy", "--blurred", d / "small.npy", "--size", 3, "-o", d / "k.npy"]
    if case == "fit: missing sharp":
        return ["fit", "--sharp", d / "nope.npy", "--blurred", d / "b.npy", "--size", 3, "-o", d / "k.npy"]
    if case == "fit: existing output":
        np.save(d / "k.npy", np.zeros(1))
        return ["fit", "--sharp", d / "s.npy", "--blurred", d / "b.npy", "--size", 3, "-o", d / "k.npy"]
    if case == "fit: size 0":
        return ["fit", "--sharp", d / "s.npy", "--blurred", d / "b.npy", "--size", 0, "-o", d / "k.npy"]
    if case == "fit: size too large for the image":
        return ["fit", "--sharp", d / "s.npy", "--blurred", d / "b.npy", "--size", 13, "-o", d / "k.npy"]
    if case == "output file named with several inputs":
        np.save(d / "b2.npy", np.load(d / "b.npy"))
        return ["apply", d / "b.npy", d / "b2.npy", "--psf", d / "psf.npy", "-o", d / "out.npy"]
    if case == "psf larger than the image":
        np.save(d / "tiny.npy", np.full((5, 40), 0.5))
        return ["apply", d / "tiny.npy", "--gaussian", 2, "-o", d / "out.npy"]
    if case == "folder with a non-image file, --strict":
        (d / "in").mkdir()
        np.save(d / "in" / "a.npy", np.load(d / "b.npy"))
        (d / "in" / "notes.txt").write_text("not a picture")
        return ["apply", d / "in", "--psf", d / "psf.npy", "-o", d / "out", "--strict"]
    raise AssertionError(case)


CASES = {
    "missing input": "does not exist",
    "missing input, non-causal psf": "does not exist",
    "unreadable input": "cannot read",
    "one bad input among several": "cannot read",
    "missing psf": "does not exist",
    "psf with nan": "NaN or Inf",
    "psf with inf (csv)": "NaN or Inf",
    "psf of even shape": "odd height and width",
    "psf of 3 dimensions": "2-D",
    "psf text unparsable": "cannot read PSF",
    "existing output without --force": "exists; use --force",
    "exact with a non-causal psf": "not inside one quadrant.*--method tikhonov",
    "exact with an unstable psf": "not stable on a 48 x 64 image.*does not decay.*--method tikhonov",
    "exact with the wrong orientation": "not inside the BR quadrant",
    "negative lambda": "--lam must be",
    "lam with exact": "apply only to --method tikhonov",
    "usage: no psf": "one of the arguments --psf --motion --gaussian is required",
    "usage: bad number": "invalid float value",
    "usage: no command": "required",
    "output cannot keep the dtype": "cannot hold 1-channel float64",
    "cuda without a gpu": "no CUDA GPU",
    "fit: different shapes": "same shape",
    "fit: missing sharp": "does not exist",
    "fit: existing output": "exists; use --force",
    "fit: size 0": "--size must be at least 1",
    "fit: size too large for the image": "--size 13 is too large for a 48 x 64 image: at most 12",
    "output file named with several inputs": r"-o .*out.npy names a file, but there are 2 inputs; name a folder",
    "psf larger than the image": r"the PSF \(13 x 13\) is larger than .*tiny.npy \(5 x 40\)",
    "folder with a non-image file, --strict": r"notes.txt is not a supported image .*--strict refuses it",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_error_exits_2_with_one_line_and_writes_nothing(files, capsys, case):
    if case == "cuda without a gpu" and cuda_problem() is None:
        pytest.skip("a GPU is present")
    argv = _prepare(case, files)
    before = listing(files)
    mtimes = {p: p.stat().st_mtime_ns for p in files.iterdir()}
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("invconv-deblur: error: ")
    assert re.search(CASES[case], lines[0]), lines[0]
    assert listing(files) == before
    assert {p: p.stat().st_mtime_ns for p in files.iterdir()} == mtimes
    assert out == ""
