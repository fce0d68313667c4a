"""The README's examples run as written, and what it says about installing matches what CI does."""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def _section(title):
    """The README's text from the heading ``## title`` to the next ``## `` heading."""
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def _bash_blocks(text):
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def _commands(block):
    """The command lines of a bash block, comments stripped."""
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index):
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), {})


def test_quick_start_installs_only_what_the_demo_needs():
    # Before: the quick start pinned torch, which resolves to the multi-GB CUDA build from the public index.
    quick, tests = _bash_blocks(_section("Quick start"))[:2]
    assert _commands(quick) == ['python -m pip install -e ".[cli]"', "invconv-deblur demo"]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not any(re.match(r"(torch|cupy|nvidia)", requirement) for requirement in extras["cli"])
    assert _commands(tests)[0] == "python -m pip install torch==2.13.0"  # first, so pip keeps the CPU build


def test_ci_runs_exactly_the_readme_test_lines():
    tests = _bash_blocks(_section("Quick start"))[1]
    ci = (ROOT / ".ci" / "run").read_text().split("# --- README: tests ---\n")[1]
    assert _commands(ci) == _commands(tests)
    assert _commands(tests)[-1] == "python -m pytest"


def test_readme_is_self_contained():
    # Before: README pointed to a SPEC.md that is not in the repository.
    assert "SPEC.md" not in README
    operator = _section("The operator")
    for orientation, anchor in (("TL", "(KH-1, KW-1)"), ("TR", "(KH-1, 0)"), ("BL", "(0, KW-1)"), ("BR", "(0, 0)")):
        assert re.search(rf"\| {orientation} \| \([^|]*\) \| {re.escape(anchor)} \|", operator), orientation
    for words in ("lower-triangular", "log|det T| = H * W * sum_o log|A[o, o]|", "anchor_index", "ValueError"):
        assert words in operator


@pytest.mark.slow
def test_cli_block_runs_in_order_as_written(tmp_path):
    # Before: the demo wrote into ./invconv-deblur-demo/ and the next line expected psf.npy here.
    script = shutil.which("invconv-deblur", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the invconv-deblur console script is not installed (pip install -e '.[cli]')")
    block = _bash_blocks(_section("Deblurring from the command line"))[0]
    env = {"PATH": f"{Path(script).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    demo = tmp_path / "invconv-deblur-demo"
    for name in ("restored.png", "exact.png", "restored/blurred.png", "kernel.npy", "refit.png"):
        assert (demo / name).is_file(), name
    assert "skipping photos/notes.txt: not a supported image" in done.stderr
