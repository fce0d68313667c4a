"""Image IO: every supported kind round-trips with its dtype; unsupported ones are refused clearly."""

import struct
import zlib

import numpy as np
import pytest

from cli_util import listing
from invconv_cupy.cli.errors import CliError
from invconv_cupy.cli.images import atomic_output, check_writable, encode, read_image, write_image


def _png16_rgb(path, pixels):
    """A 16-bit RGB PNG written by hand (Pillow cannot write one)."""
    h, w, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[i].astype(">u2").tobytes() for i in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


@pytest.mark.parametrize(
    "suffix, dtype, channels",
    [
        (".png", np.uint8, 1),
        (".png", np.uint8, 3),
        (".png", np.uint16, 1),
        (".tif", np.uint8, 1),
        (".tiff", np.uint16, 3),
        (".tif", np.float32, 1),
        (".npy", np.float32, 3),
        (".npy", np.float64, 1),
        (".npy", np.float64, 5),
    ],
)
def test_lossless_round_trip(tmp_path, rng, suffix, dtype, channels):
    shape = (7, 9) if channels == 1 else (7, 9, channels)
    if np.issubdtype(dtype, np.integer):
        pixels = rng.integers(0, np.iinfo(dtype).max + 1, shape).astype(dtype)
    else:
        pixels = rng.standard_normal(shape).astype(dtype)
    path = tmp_path / f"a{suffix}"
    write_image(path, np.moveaxis(pixels.reshape(7, 9, channels), -1, 0).astype(np.float64) / (
        np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1), np.dtype(dtype))
    image = read_image(path)
    assert image.dtype == dtype and image.channels == channels
    back = encode(image.data, image.dtype)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, pixels)
    assert listing(tmp_path) == [path.name]


def test_jpeg_round_trip_is_close(tmp_path, rng):
    ramp = np.linspace(0.2, 0.8, 16)
    data = np.stack([np.add.outer(ramp, ramp) / 2 + rng.uniform(-0.1, 0.1) for _ in range(3)])
    write_image(tmp_path / "a.jpg", data, np.dtype(np.uint8))
    image = read_image(tmp_path / "a.jpg")
    assert image.dtype == np.uint8 and image.channels == 3
    assert np.abs(image.data - data).max() < 0.03


def test_integer_output_is_clipped_and_rounded():
    data = np.array([[[-0.5, 0.2, 1.7]]])
    np.testing.assert_array_equal(encode(data, np.dtype(np.uint8)), [[0, 51, 255]])
    np.testing.assert_array_equal(encode(data, np.dtype(np.float32)), data[0].astype(np.float32))


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda p: p.with_suffix(".png").write_bytes(b"not a png"), "cannot read"),
        (lambda p: np.save(p.with_suffix(".npy"), np.arange(6).reshape(2, 3)), "float array"),
        (lambda p: np.save(p.with_suffix(".npy"), np.array([[0.0, np.inf]])), "NaN or Inf"),
        (lambda p: np.save(p.with_suffix(".npy"), np.zeros((2, 2, 2, 2))), "2-D .* or 3-D"),
        (lambda p: np.save(p.with_suffix(".npy"), np.zeros((0, 3))), "empty"),
        (lambda p: _png16_rgb(p.with_suffix(".png"), np.zeros((2, 3, 3), np.uint16)), "16-bit RGB PNG"),
        (lambda p: p.with_suffix(".bmp").write_bytes(b"BM"), "unsupported file type"),
    ],
)
def test_bad_inputs_are_refused(tmp_path, make, words):
    make(tmp_path / "bad")
    (path,) = tmp_path.iterdir()
    with pytest.raises(CliError, match=words):
        read_image(path)


def test_rgba_png_keeps_its_alpha_apart(tmp_path, rng):
    from PIL import Image

    pixels = rng.integers(0, 256, (4, 5, 4)).astype(np.uint8)
    Image.fromarray(pixels, "RGBA").save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.channels == 3 and image.dtype == np.uint8
    np.testing.assert_array_equal(image.alpha, pixels[..., 3])
    np.testing.assert_array_equal(encode(image.data, image.dtype, image.alpha), pixels)


def test_cmyk_jpeg_is_refused(tmp_path):
    from PIL import Image

    Image.new("CMYK", (4, 4)).save(tmp_path / "a.jpg")
    with pytest.raises(CliError, match="mode CMYK"):
        read_image(tmp_path / "a.jpg")


def test_missing_file(tmp_path):
    with pytest.raises(CliError, match="does not exist"):
        read_image(tmp_path / "nope.png")


@pytest.mark.parametrize(
    "name, dtype, channels, ok",
    [
        ("a.png", np.uint16, 3, False),
        ("a.jpg", np.uint16, 1, False),
        ("a.npy", np.uint8, 1, False),
        ("a.png", np.float32, 1, False),
        ("a.tif", np.float64, 5, False),
        ("a.gif", np.uint8, 1, False),
        ("a.tif", np.uint16, 3, True),
        ("a.npy", np.float32, 5, True),
    ],
)
def test_check_writable(tmp_path, name, dtype, channels, ok):
    if ok:
        check_writable(tmp_path / name, np.dtype(dtype), channels)
    else:
        with pytest.raises(CliError):
            check_writable(tmp_path / name, np.dtype(dtype), channels)


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.npy"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as handle:
            handle.write(b"partial")
            raise RuntimeError("boom")
    assert listing(tmp_path) == ["out.npy"]
    assert target.read_bytes() == b"old"
