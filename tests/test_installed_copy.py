"""The wheel carries kernels/ and bindings/: import from an installed copy, not the source tree."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_PROBE = r"""
import importlib.resources, json, pathlib, sys
import numpy as np
import invconv_cupy, invconv_cupy.kernels, invconv_cupy.torch
where = pathlib.Path(invconv_cupy.__file__).resolve()
assert str(where).startswith(sys.argv[1]), where
sources = sorted(p.name for p in importlib.resources.files("invconv_cupy.kernels").iterdir() if p.name.endswith(".cu"))
assert sources == json.loads(sys.argv[2]), sources
x = np.random.default_rng().standard_normal((1, 2, 3, 3))
w = np.zeros((2, 2, 2, 2)); w[0, 0, 1, 1] = w[1, 1, 1, 1] = 1.0
np.testing.assert_array_equal(invconv_cupy.solve(x, w), x)
# the emulator compiles from the installed copy's kernels/ (its runtime's source included)
np.testing.assert_array_equal(invconv_cupy.solve(x, w, backend="emulate"), x)
print("ok", where)
"""


@pytest.mark.slow
def test_wheel_installs_kernels_and_bindings(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
    )
    (wheel,) = tmp_path.glob("invconv_cupy-*.whl")
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)
    expected = sorted(p.name for p in (ROOT / "kernels").glob("*.cu"))
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(target.resolve()), json.dumps(expected)],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


_BLOCKED = r"""
import sys
for name in ("cupy", "torch", "skimage", "PIL", "tqdm"):
    sys.modules[name] = None  # any import of these now fails
import numpy as np
import invconv_cupy
x = np.ones((1, 1, 2, 2)); w = np.ones((1, 1, 1, 1))
np.testing.assert_array_equal(invconv_cupy.solve(x, w), x)
print("ok")
"""


def test_core_needs_only_numpy_and_scipy():
    out = subprocess.run([sys.executable, "-c", _BLOCKED], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
