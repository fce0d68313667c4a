"""Inputs as people have them: alpha channels, palette images, folders with other files, a missing extra."""

import subprocess
import sys

import numpy as np
import pytest
from scipy.signal import convolve2d

from cli_util import listing, psnr, run_cli, stable_quadrant_psf, synthetic_image

PSF = np.full((3, 3), 1 / 9)


def _blurred_rgb(rng):
    sharp = synthetic_image(rng, shape=(40, 48), channels=3)
    blurred = np.stack([convolve2d(sharp[..., c], PSF, mode="same") for c in range(3)], axis=-1)
    return sharp, np.rint(np.clip(blurred, 0, 1) * 255).astype(np.uint8)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_passed_through_and_the_colour_deblurred(tmp_path, capsys, rng, mode):
    # Before: refused ("has image mode RGBA").
    from PIL import Image

    sharp, blurred = _blurred_rgb(rng)
    if mode == "LA":
        sharp, blurred = sharp[..., :1], blurred[..., :1]
    alpha = rng.integers(0, 256, blurred.shape[:2]).astype(np.uint8)
    Image.fromarray(np.dstack([blurred, alpha]).squeeze(), mode).save(tmp_path / "in.png")
    np.save(tmp_path / "psf.npy", PSF)
    code, _, err = run_cli(capsys, "apply", tmp_path / "in.png", "--psf", tmp_path / "psf.npy", "-o", tmp_path / "out.png")
    assert code == 0, err
    with Image.open(tmp_path / "out.png") as out:
        assert out.mode == mode
        pixels = np.asarray(out)
    np.testing.assert_array_equal(pixels[..., -1], alpha)
    colour = pixels[..., :-1] / 255
    assert psnr(sharp, colour) > psnr(sharp, blurred / 255) + 1


def test_palette_image_is_converted(tmp_path, capsys, rng):
    from PIL import Image

    _, blurred = _blurred_rgb(rng)
    Image.fromarray(blurred, "RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(tmp_path / "p.png")
    np.save(tmp_path / "psf.npy", PSF)
    code, _, err = run_cli(capsys, "apply", tmp_path / "p.png", "--psf", tmp_path / "psf.npy", "-o", tmp_path / "o.png")
    assert code == 0, err
    with Image.open(tmp_path / "o.png") as out:
        assert out.mode == "RGB" and out.size == (48, 40)


def test_alpha_output_needs_a_format_that_holds_it(tmp_path, capsys, rng):
    from PIL import Image

    _, blurred = _blurred_rgb(rng)
    Image.fromarray(np.dstack([blurred, blurred[..., 0]]), "RGBA").save(tmp_path / "in.png")
    code, out, err = run_cli(capsys, "apply", tmp_path / "in.png", "--gaussian", 1, "-o", tmp_path / "out.jpg")
    assert code == 2 and len(err.splitlines()) == 1 and "cannot hold uint8 data with alpha" in err
    assert listing(tmp_path) == ["in.png"]


def test_folder_skips_other_files_with_one_line_each(tmp_path, capsys, rng):
    # Before: skipped without a word.
    psf = stable_quadrant_psf(rng, "TL")
    np.save(tmp_path / "psf.npy", psf)
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "a.npy", convolve2d(synthetic_image(rng), psf, mode="same"))
    (tmp_path / "in" / "notes.txt").write_text("not a picture")
    (tmp_path / "in" / "raw.cr2").write_bytes(b"\0")
    (tmp_path / "in" / ".DS_Store").write_bytes(b"\0")
    code, _, err = run_cli(capsys, "apply", tmp_path / "in", "--psf", tmp_path / "psf.npy", "-o", tmp_path / "out")
    assert code == 0, err
    skipped = [line for line in err.splitlines() if "skipping" in line]
    assert len(skipped) == 2
    assert any("notes.txt: not a supported image" in line for line in skipped)
    assert any("raw.cr2: not a supported image" in line for line in skipped)
    assert listing(tmp_path / "out") == ["a.npy"]


def test_without_the_cli_extra_one_line_names_it(tmp_path):
    # Before: ModuleNotFoundError traceback.
    blocker = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('skimage', 'PIL', 'tqdm', 'tifffile'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from invconv_cupy.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    for argv in (["demo"], ["apply", "x.png", "--gaussian", "1", "-o", "y.png"], ["--help"]):
        done = subprocess.run([sys.executable, "-c", blocker, *argv], capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 2
        assert done.stderr.splitlines() == [
            "invconv-deblur: error: the command line needs the 'cli' extra (scikit-image, Pillow, tqdm, tifffile "
            "missing): pip install 'invconv-cupy[cli]' (from a clone: pip install -e '.[cli]')"
        ]
    assert list(tmp_path.iterdir()) == []
