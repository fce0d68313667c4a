"""Reading and writing images: PNG, JPEG, TIFF (8/16-bit, grey/RGB, or float) and ``.npy`` float arrays.

Inside the command line an image is a ``(C, H, W)`` float64 array: integer
images scaled to ``[0, 1]`` by their dtype's maximum, float images as stored.
An alpha channel (grey+alpha, RGBA) is kept aside, as stored, and written back
unchanged; palette and bilevel images are converted to RGB(A) and grey.
Output keeps the input's dtype: integer images are clipped to their range and
rounded, float images are written as they are. Every file is checked and
written through :mod:`.output`: never a NaN, overflowed or saturated picture,
never a partial file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CliError
from .output import atomic_output, check_result

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
ARRAY_SUFFIXES = (".npy",)
SUFFIXES = IMAGE_SUFFIXES + ARRAY_SUFFIXES

_INTEGER_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
_FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))

#: What each output format can store: suffix -> {dtype: allowed channel counts (None: any)}.
_WRITABLE = {
    ".npy": {np.dtype(np.float16): None, np.dtype(np.float32): None, np.dtype(np.float64): None},
    ".tif": {np.dtype(t): (1, 3) for t in (np.uint8, np.uint16, np.float32, np.float64)},
    ".png": {np.dtype(np.uint8): (1, 3), np.dtype(np.uint16): (1,)},
    ".jpg": {np.dtype(np.uint8): (1, 3)},
}
_WRITABLE[".tiff"] = _WRITABLE[".tif"]
_WRITABLE[".jpeg"] = _WRITABLE[".jpg"]
#: The formats and dtypes that can store an alpha channel beside grey or RGB.
_WRITABLE_ALPHA = {
    ".png": (np.dtype(np.uint8),),
    ".tif": tuple(np.dtype(t) for t in (np.uint8, np.uint16, np.float32, np.float64)),
}
_WRITABLE_ALPHA[".tiff"] = _WRITABLE_ALPHA[".tif"]

#: Pillow modes read as they are; those converted first (palette, bilevel, palette+alpha).
_PILLOW_MODES = ("L", "LA", "RGB", "RGBA", "I;16")
_PILLOW_CONVERT = {"P": "RGB", "PA": "RGBA", "1": "L"}


@dataclass(frozen=True)
class Image:
    """An image read from disk.

    Attributes
    ----------
    path : Path
    data : numpy.ndarray, shape (C, H, W), float64
        Integer images scaled to ``[0, 1]``, float images as stored (alpha not included).
    dtype : numpy.dtype
        The stored dtype, which the output keeps.
    alpha : numpy.ndarray or None, shape (H, W)
        The alpha channel as stored (``dtype``), passed through to the output.
    """

    path: Path
    data: np.ndarray
    dtype: np.dtype
    alpha: np.ndarray | None = None

    @property
    def channels(self) -> int:
        """The number of channels (1 grey, 3 RGB, any for ``.npy``)."""
        return self.data.shape[0]


def _pixels_from_pillow(path: Path) -> np.ndarray:
    from PIL import Image as PILImage

    with PILImage.open(path) as im:
        # A tile's fourth field is its decoder arguments, the raw mode first ("RGB;16B": 16 bits per sample).
        raw_modes = {tile[3] if isinstance(tile[3], str) else tile[3][0] for tile in im.tile}
        if im.mode in ("RGB", "RGBA", "LA") and any(";16" in str(mode) for mode in raw_modes):
            raise CliError(
                f"{path} is a 16-bit {im.mode} PNG, which Pillow reads only as 8-bit; save it as a 16-bit TIFF"
            )
        if im.mode in _PILLOW_CONVERT:
            target = _PILLOW_CONVERT[im.mode]
            if im.mode == "P" and "transparency" in im.info:
                target = "RGBA"
            return np.asarray(im.convert(target))
        if im.mode not in _PILLOW_MODES:
            raise CliError(
                f"{path} has image mode {im.mode}; supported: 8-bit grey (L), 16-bit grey (I;16), RGB, each with or "
                "without alpha (LA, RGBA), and palette (P, PA) or bilevel (1) images, converted"
            )
        return np.asarray(im)


def _pixels_from_tiff(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes = series.axes
        pixels = series.asarray()
    if axes == "SYX":
        pixels = np.moveaxis(pixels, 0, -1)
    elif axes not in ("YX", "YXS"):
        raise CliError(f"{path} is a TIFF with axes {axes!r}; only one grey or RGB image (YX, YXS, SYX) is supported")
    if pixels.ndim == 3 and pixels.shape[-1] not in (1, 2, 3, 4):
        raise CliError(
            f"{path} has {pixels.shape[-1]} samples per pixel; supported: grey (1), grey+alpha (2), RGB (3), RGBA (4)"
        )
    return pixels


def read_image(path: str | Path) -> Image:
    """Read an image or a ``.npy`` float array.

    ``.npy`` arrays are ``(H, W)`` or ``(H, W, C)`` (channels last) and must be
    floating point; images are 8- or 16-bit grey or RGB, or float TIFF; in
    images, a second (grey) or fourth (RGB) channel is alpha.

    Raises
    ------
    CliError
        For a missing, unreadable or unsupported file, or one holding NaN or Inf.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise CliError(f"{path}: unsupported file type {suffix or '(none)'}; expected one of {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise CliError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        if suffix == ".npy":
            pixels = np.load(path, allow_pickle=False)
        elif suffix in (".tif", ".tiff"):
            pixels = _pixels_from_tiff(path)
        else:
            pixels = _pixels_from_pillow(path)
    except CliError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders fail in many ways; each means "unreadable"
        raise CliError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    dtype = pixels.dtype
    if suffix == ".npy" and dtype not in _FLOAT_DTYPES:
        raise CliError(f"{path} must hold a float array (float16/32/64), got dtype {dtype}")
    if dtype not in _INTEGER_DTYPES + _FLOAT_DTYPES:
        raise CliError(f"{path} has pixel type {dtype}; supported: uint8, uint16, float16/32/64")
    if pixels.ndim not in (2, 3):
        raise CliError(f"{path} must be 2-D (H, W) or 3-D (H, W, C), got shape {pixels.shape}")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if min(pixels.shape) < 1:
        raise CliError(f"{path} is empty (shape {pixels.shape})")
    alpha = None
    if suffix != ".npy" and pixels.shape[-1] in (2, 4):
        pixels, alpha = pixels[..., :-1], np.ascontiguousarray(pixels[..., -1])
    data = np.moveaxis(pixels, -1, 0).astype(np.float64)
    if dtype in _INTEGER_DTYPES:
        data /= np.iinfo(dtype).max
    elif not np.isfinite(data).all():
        raise CliError(f"{path} contains NaN or Inf")
    return Image(path, np.ascontiguousarray(data), dtype, alpha)


def check_writable(path: Path, dtype: np.dtype, channels: int, alpha: bool = False) -> None:
    """Raise ``CliError`` unless ``path``'s format stores ``channels`` channels of ``dtype`` (plus alpha with ``alpha``)."""
    suffix = path.suffix.lower()
    if suffix not in _WRITABLE:
        raise CliError(f"{path}: unsupported output type {suffix or '(none)'}; expected one of {', '.join(SUFFIXES)}")
    if alpha and np.dtype(dtype) not in _WRITABLE_ALPHA.get(suffix, ()):
        raise CliError(
            f"{path}: a {suffix} file cannot hold {np.dtype(dtype)} data with alpha; the output keeps the input's "
            "type and alpha, so choose another output format (.png for 8-bit, .tif)"
        )
    allowed = _WRITABLE[suffix].get(np.dtype(dtype), ())
    if allowed is not None and channels not in allowed:
        kinds = ", ".join(
            f"{d}" + ("" if ch is None else f" ({'/'.join(map(str, ch))} channels)")
            for d, ch in _WRITABLE[suffix].items()
        )
        raise CliError(
            f"{path}: a {suffix} file cannot hold {channels}-channel {np.dtype(dtype)} data "
            f"(it holds {kinds}); the output keeps the input's type, so choose another output format"
        )


def encode(data: np.ndarray, dtype: np.dtype, alpha: np.ndarray | None = None) -> np.ndarray:
    """``(C, H, W)`` float64 data as the ``(H, W)`` or ``(H, W, C)`` array of ``dtype`` to store.

    Integer dtypes: clipped to ``[0, 1]``, scaled to the dtype's range, rounded.
    ``alpha`` (as stored, ``(H, W)``) becomes the last channel unchanged.
    """
    dtype = np.dtype(dtype)
    if dtype in _INTEGER_DTYPES:
        top = np.iinfo(dtype).max
        data = np.rint(np.clip(data, 0.0, 1.0) * top)
    pixels = np.moveaxis(data, 0, -1).astype(dtype)
    if alpha is not None:
        pixels = np.concatenate([pixels, alpha[:, :, None].astype(dtype)], axis=-1)
    return pixels[:, :, 0] if pixels.shape[-1] == 1 else pixels


def write_image(path: Path, data: np.ndarray, dtype: np.dtype, alpha: np.ndarray | None = None) -> None:
    """Write ``(C, H, W)`` float64 ``data`` (and ``alpha``) to ``path`` in ``dtype`` (see :func:`encode`), atomically.

    Raises ``CliError`` for a result :func:`output.check_result` refuses, and when the file cannot be written.
    """
    check_writable(path, dtype, data.shape[0], alpha=alpha is not None)
    with np.errstate(invalid="ignore", over="ignore"):   # check_result reports what the cast could not keep
        pixels = encode(data, dtype, alpha)
    check_result(path, data, pixels)
    suffix = path.suffix.lower()
    with atomic_output(path) as handle:
        if suffix == ".npy":
            np.save(handle, pixels, allow_pickle=False)
        elif suffix in (".tif", ".tiff"):
            import tifffile

            colour = data.shape[0] == 3
            extra = {"extrasamples": ["unassalpha"]} if alpha is not None else {}
            tifffile.imwrite(handle, pixels, photometric="rgb" if colour else "minisblack", **extra)
        else:
            from PIL import Image as PILImage

            fmt = "PNG" if suffix == ".png" else "JPEG"
            options = {"quality": 95} if fmt == "JPEG" else {}
            PILImage.fromarray(pixels).save(handle, format=fmt, **options)


def list_inputs(paths: list[str]) -> tuple[list[Path], bool, list[Path]]:
    """Expand the command line's inputs: files as given, folders to their supported files (sorted, not recursive).

    Returns
    -------
    files : list of Path
    from_folder : bool
        Whether any input was a folder.
    skipped : list of Path
        Files in those folders that are not supported images (hidden files are ignored).

    Raises
    ------
    CliError
        For a missing input or a folder with no supported files.
    """
    files, from_folder, skipped = [], False, []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            from_folder = True
            found, others = [], []
            for p in sorted(path.iterdir()):
                if p.is_file() and not p.name.startswith("."):
                    (found if p.suffix.lower() in SUFFIXES else others).append(p)
            if not found:
                raise CliError(f"folder {path} holds no {', '.join(SUFFIXES)} files")
            files.extend(found)
            skipped.extend(others)
        elif path.exists():
            files.append(path)
        else:
            raise CliError(f"{path} does not exist")
    return files, from_folder, skipped
