"""invconv-flow's data: the built-in sets and their splits, the user's arrays and image folders."""

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn", reason="the flows extra (scikit-learn) is not installed")
pytest.importorskip("skimage", reason="the cli extra (scikit-image) is not installed")

from invconv_cupy.cli.errors import CliError  # noqa: E402
from invconv_cupy.flowcli import data  # noqa: E402


def test_digits_split_is_fixed_and_disjoint():
    from sklearn.datasets import load_digits

    digits = data.load("digits")
    assert digits.levels == 17 and digits.shape == (1, 8, 8)
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1350, 150, 297)
    assert all(part.dtype == np.uint8 and part.max() <= 16 for part in (digits.train, digits.val, digits.test))
    everything = np.concatenate([digits.train, digits.val, digits.test])[:, 0]
    reference = load_digits().images.astype(np.uint8)
    # a permutation of scikit-learn's images: every image used exactly once
    order = lambda a: a[np.lexsort(a.reshape(len(a), -1).T)]  # noqa: E731
    np.testing.assert_array_equal(order(everything), order(reference))
    np.testing.assert_array_equal(data.load("digits").test, digits.test)  # the same split every time


def test_patch_pictures_are_split_by_source():
    pictures = [set(data.TRAIN_PICTURES), set(data.VAL_PICTURES), set(data.TEST_PICTURES)]
    assert all(a.isdisjoint(b) for i, a in enumerate(pictures) for b in pictures[i + 1:])


@pytest.mark.parametrize("size", [16, 32])
def test_patches_tile_their_pictures(size):
    patches = data.load(f"patches{size}")
    assert patches.levels == 256 and patches.shape == (1, size, size)
    assert len(patches.train) == data.TRAIN_PATCHES
    expected_test = np.concatenate([data._tiles(data._picture(n), size) for n in data.TEST_PICTURES])
    np.testing.assert_array_equal(patches.test[:, 0], expected_test)
    camera = data._picture("camera")
    np.testing.assert_array_equal(patches.test[1, 0], camera[:size, size : 2 * size])


def test_random_patches_are_windows_of_their_pictures(rng):
    pictures = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(9, 12), (20, 7)]]
    patches = data._random_patches(pictures, 5, 300)
    windows = [np.lib.stride_tricks.sliding_window_view(p, (5, 5)).reshape(-1, 25) for p in pictures]
    found = [[(w == patch.ravel()).all(axis=1).any() for w in windows] for patch in patches]
    assert all(any(f) for f in found)
    from_first = np.mean([f[0] for f in found])
    positions = np.array([5 * 8, 16 * 3])  # windows per picture
    assert abs(from_first - positions[0] / positions.sum()) < 0.15


def test_user_npy_npz_and_folder(tmp_path, rng):
    from PIL import Image

    grey = rng.integers(0, 256, (12, 8, 4), dtype=np.uint8)
    rgb = rng.integers(0, 256, (10, 4, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "grey.npy", grey)
    np.savez(tmp_path / "keras.npz", x_train=rgb, x_test=rgb[:3], y_train=np.arange(10))
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(rgb):
        Image.fromarray(image).save(folder / f"{i:02d}.png")

    loaded = data.load(str(tmp_path / "grey.npy"), val_fraction=0.25)
    assert (loaded.levels, loaded.shape, len(loaded.train), len(loaded.val), loaded.test) == (256, (1, 8, 4), 9, 3, None)
    both = np.concatenate([loaded.train, loaded.val])[:, 0]
    assert sorted(map(bytes, both)) == sorted(map(bytes, grey))

    keras = data.load(str(tmp_path / "keras.npz"))
    np.testing.assert_array_equal(keras.test, rgb[:3].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(data.load_test(str(tmp_path / "keras.npz"), 256, named=False), keras.test)
    np.testing.assert_array_equal(data.load_test(str(tmp_path / "grey.npy"), 256, named=True)[:, 0], grey)
    with pytest.raises(CliError, match="has no held-out part"):
        data.load_test(str(tmp_path / "grey.npy"), 256, named=False)
    images, held_out = data.read_images(str(folder))
    np.testing.assert_array_equal(images, rgb.transpose(0, 3, 1, 2))
    assert held_out is None


@pytest.mark.parametrize("make, match", [
    (lambda p: np.save(p / "d.npy", np.zeros((4, 8, 8), np.float32)), "uint8"),
    (lambda p: np.save(p / "d.npy", np.zeros((4, 8, 8, 5), np.uint8)), "channels last"),
    (lambda p: np.save(p / "d.npy", np.zeros((0, 8, 8), np.uint8)), "empty"),
    (lambda p: np.savez(p / "d.npz", a=np.zeros((4, 8, 8), np.uint8), b=np.zeros(3)), "expected one array"),
    (lambda p: (p / "d.npy").write_bytes(b"not numpy"), "cannot read"),
    (lambda p: (p / "d.txt").write_text("1 2 3"), "unsupported data file"),
    (lambda p: np.save(p / "d.npy", np.full((4, 8, 8), 9, np.uint8)), "does not fit 8 levels"),
    (lambda p: np.save(p / "d.npy", np.zeros((1, 8, 8), np.uint8)), "too few"),
])
def test_bad_user_data_is_refused(tmp_path, make, match):
    make(tmp_path)
    (source,) = [p for p in tmp_path.iterdir()]
    with pytest.raises(CliError, match=match):
        data.load(str(source), levels=8 if "levels" in match else None)


def test_bad_folders_are_refused(tmp_path):
    from PIL import Image

    with pytest.raises(CliError, match="holds no"):
        data.load(str(tmp_path))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((8, 6), np.uint8)).save(tmp_path / "b.png")
    with pytest.raises(CliError, match="all images must match"):
        data.load(str(tmp_path))
    (tmp_path / "b.png").unlink()
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(tmp_path / "c.png")
    with pytest.raises(CliError, match="mode RGBA"):
        data.load(str(tmp_path))
    with pytest.raises(CliError, match="does not exist"):
        data.load(str(tmp_path / "missing"))
    with pytest.raises(CliError, match="own number of levels"):
        data.load("digits", levels=256)
