"""The image data ``invconv-flow`` trains on: built-in sets and the user's uint8 arrays or image folders.

Every set is held as uint8 arrays ``(N, C, H, W)`` with values ``0 .. levels - 1``
in three parts: ``train``, ``val`` (the validation split, watched during
training) and ``test`` (held out, for ``evaluate``).

- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images, 17 levels);
  a fixed shuffle gives 1,350 train, 150 validation, 297 test images.
- ``patches16``, ``patches32``: grey patches of the photographs bundled with
  scikit-image (256 levels), split **by source picture**: 50,000 patches at
  random positions of seven training pictures, and non-overlapping patches
  tiling two validation pictures and three test pictures, so no test pixel was
  ever seen in training.
- A path: a ``.npy`` uint8 array ``(N, H, W)`` or ``(N, H, W, C)`` (C = 1 or 3),
  a ``.npz`` holding one such array or Keras' layout (``x_train``, ``x_test``),
  or a folder of equally sized grey or RGB images (PNG, JPEG, BMP). The
  validation split is a fixed random fraction of the training images; the test
  part is ``x_test`` of a Keras ``.npz`` (otherwise ``evaluate --data`` names it).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from invconv_cupy.cli.errors import CliError

BUILTIN = ("digits", "patches16", "patches32")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

# scikit-image's bundled photographs (no download), split by picture.
TRAIN_PICTURES = ("astronaut", "brick", "chelsea", "grass", "moon", "rocket", "motorcycle")
VAL_PICTURES = ("clock", "coins")
TEST_PICTURES = ("camera", "coffee", "gravel")
TRAIN_PATCHES = 50_000
_SPLIT_SEED = 0  # fixed: the splits never depend on a run's --seed


@dataclass(frozen=True)
class Dataset:
    """Image data as uint8 arrays ``(N, C, H, W)``.

    Attributes
    ----------
    name : str
        A built-in name or the path it was read from.
    levels : int
        Values per dimension (the data lie in ``0 .. levels - 1``).
    train, val : numpy.ndarray
    test : numpy.ndarray or None
        None when the source has no held-out part.
    """

    name: str
    levels: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray | None

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.train.shape[1:])


def _shuffled_split(images: np.ndarray, *counts: int) -> list[np.ndarray]:
    """Cut a fixed shuffle of ``images`` into consecutive parts of ``counts`` images (the rest last)."""
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(images))
    bounds = np.cumsum(counts)
    return [images[part] for part in np.split(order, bounds)]


def _digits() -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise CliError('digits needs scikit-learn: pip install "invconv-cupy[flows]"') from None

    images = load_digits().images.astype(np.uint8)[:, None]  # 0 .. 16
    test, val, train = _shuffled_split(images, 297, 150)
    return Dataset("digits", 17, train, val, test)


def _picture(name: str) -> np.ndarray:
    """A bundled photograph as a grey uint8 ``(H, W)`` array."""
    import skimage.data
    from skimage.color import rgb2gray

    rgb = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    if rgb.ndim == 2:
        return rgb
    return np.rint(rgb2gray(rgb) * 255).astype(np.uint8)


def _tiles(picture: np.ndarray, size: int) -> np.ndarray:
    """The non-overlapping ``size x size`` patches tiling ``picture`` (its ragged edge left out), ``(N, size, size)``."""
    rows, cols = picture.shape[0] // size, picture.shape[1] // size
    grid = picture[: rows * size, : cols * size].reshape(rows, size, cols, size)
    return grid.transpose(0, 2, 1, 3).reshape(-1, size, size)


def _random_patches(pictures: list[np.ndarray], size: int, count: int) -> np.ndarray:
    """``count`` patches at uniformly random positions, each picture weighted by its number of positions."""
    rng = np.random.default_rng(_SPLIT_SEED)
    positions = np.array([(p.shape[0] - size + 1) * (p.shape[1] - size + 1) for p in pictures])
    source = rng.choice(len(pictures), size=count, p=positions / positions.sum())
    out = np.empty((count, size, size), np.uint8)
    for index, picture in enumerate(pictures):
        chosen = np.flatnonzero(source == index)
        rows = rng.integers(0, picture.shape[0] - size + 1, len(chosen))
        cols = rng.integers(0, picture.shape[1] - size + 1, len(chosen))
        windows = np.lib.stride_tricks.sliding_window_view(picture, (size, size))
        out[chosen] = windows[rows, cols]
    return out


def _patches(size: int) -> Dataset:
    def tiled(names):
        return np.concatenate([_tiles(_picture(n), size) for n in names])[:, None]

    train = _random_patches([_picture(n) for n in TRAIN_PICTURES], size, TRAIN_PATCHES)[:, None]
    return Dataset(f"patches{size}", 256, train, tiled(VAL_PICTURES), tiled(TEST_PICTURES))


def _as_nchw(array: np.ndarray, source: str) -> np.ndarray:
    """A user's uint8 ``(N, H, W)`` or ``(N, H, W, C)`` array as ``(N, C, H, W)``."""
    if array.dtype != np.uint8:
        raise CliError(f"{source} must hold uint8 pixel values, got dtype {array.dtype}")
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise CliError(
            f"{source} must have shape (N, H, W) or (N, H, W, C) with C = 1 or 3 (channels last), got {array.shape}"
        )
    if min(array.shape) < 1:
        raise CliError(f"{source} is empty (shape {array.shape})")
    return np.ascontiguousarray(array.transpose(0, 3, 1, 2))


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    with np.load(path, allow_pickle=False) as npz:
        keys = sorted(npz.files)
        if "x_train" in keys:
            test = _as_nchw(npz["x_test"], f"{path}[x_test]") if "x_test" in keys else None
            return _as_nchw(npz["x_train"], f"{path}[x_train]"), test
        if len(keys) != 1:
            raise CliError(
                f"{path} holds arrays {', '.join(keys) or '(none)'}; expected one array, or x_train (and x_test)"
            )
        return _as_nchw(npz[keys[0]], f"{path}[{keys[0]}]"), None


def _read_folder(path: Path) -> np.ndarray:
    from PIL import Image

    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise CliError(f"folder {path} holds no {', '.join(IMAGE_SUFFIXES)} images")
    images = []
    for file in files:
        try:
            with Image.open(file) as im:
                if im.mode not in ("L", "RGB"):
                    raise CliError(f"{file} has image mode {im.mode}; only 8-bit grey (L) and RGB are supported")
                pixels = np.asarray(im)
        except CliError:
            raise
        except Exception as exc:  # noqa: BLE001 - decoders fail in many ways; each means "unreadable"
            raise CliError(f"cannot read {file}: {type(exc).__name__}: {exc}") from None
        if images and pixels.shape != images[0].shape:
            raise CliError(
                f"{file} has shape {pixels.shape} but {files[0]} has {images[0].shape}; all images must match"
            )
        images.append(pixels)
    return _as_nchw(np.stack(images), str(path))


def read_images(spec: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A user's data: ``(images, held_out)`` as uint8 ``(N, C, H, W)``; ``held_out`` is a Keras ``x_test`` or None."""
    path = Path(spec)
    if not path.exists():
        raise CliError(f"{spec} does not exist (expected {', '.join(BUILTIN)}, a .npy/.npz file or an image folder)")
    if path.is_dir():
        return _read_folder(path), None
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise CliError(f"{path}: unsupported data file {suffix or '(none)'}; expected .npy, .npz or a folder")
    try:
        if suffix == ".npz":
            return _read_npz(path)
        return _as_nchw(np.load(path, allow_pickle=False), str(path)), None
    except CliError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CliError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None


def _check_levels(images: np.ndarray, levels: int, source: str) -> None:
    if levels < 2 or levels > 256:
        raise CliError(f"--levels must be between 2 and 256, got {levels}")
    top = int(images.max())
    if top >= levels:
        raise CliError(f"{source} has the value {top}, which does not fit {levels} levels (0 .. {levels - 1})")


def load(spec: str, *, levels: int | None = None, val_fraction: float = 0.1) -> Dataset:
    """The dataset named ``spec``: a built-in name or a path.

    Parameters
    ----------
    spec : str
        ``"digits"``, ``"patches16"``, ``"patches32"``, or a ``.npy``/``.npz`` file or image folder.
    levels : int, optional
        Values per dimension of a user's data (default 256); built-in sets have their own.
    val_fraction : float
        The share of a user's images set aside for validation, in ``(0, 1)``.

    Raises
    ------
    CliError
        For an unknown name, an unreadable or malformed source, or values that do not fit ``levels``.
    """
    if spec in BUILTIN:
        if levels is not None:
            raise CliError(f"--levels applies to your own data; {spec} has its own number of levels")
        return _digits() if spec == "digits" else _patches(int(spec.removeprefix("patches")))
    if not 0 < val_fraction < 1:
        raise CliError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    images, held_out = read_images(spec)
    levels = 256 if levels is None else levels
    _check_levels(images, levels, spec)
    if held_out is not None:
        _check_levels(held_out, levels, f"{spec}[x_test]")
    n_val = round(len(images) * val_fraction)
    if n_val < 1 or n_val == len(images):
        raise CliError(f"{spec} has {len(images)} images: too few to set aside a validation fraction {val_fraction}")
    val, train = _shuffled_split(images, n_val)
    return Dataset(spec, levels, train, val, held_out)


def load_test(spec: str, levels: int, *, named: bool) -> np.ndarray:
    """The held-out images of ``spec`` for ``evaluate``.

    A built-in set's test split, a Keras ``.npz``'s ``x_test``, or, when the user
    ``named`` the source with ``--data``, all its images. A checkpoint's own
    training source without a held-out part is refused: its images were trained on.
    """
    if spec in BUILTIN:
        dataset = load(spec)
        if dataset.levels != levels:
            raise CliError(f"{spec} has {dataset.levels} levels but the model was trained on {levels}")
        return dataset.test
    images, held_out = read_images(spec)
    if held_out is None and not named:
        raise CliError(f"{spec}, the checkpoint's training data, has no held-out part: name test images with --data")
    images = images if held_out is None else held_out
    _check_levels(images, levels, spec)
    return images
