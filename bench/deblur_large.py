"""``invconv-deblur apply`` on large images: wall and CPU time and peak memory, against a baseline commit.

Each case runs the command line in a child process under ``/usr/bin/time -v``
(wall clock, user + system CPU time, peak resident memory) on an 8-bit PNG made here: scikit-image's camera
(grey) or astronaut (RGB), resized to ``N x N``, with pixel-scale texture added (so
deblurring has detail to restore), blurred by the case's PSF (``--motion 9 30
--decay 0.85``, causal: the default computes both exact and tikhonov; or
``--gaussian 1``, not causal: tikhonov only), white noise 0.005.

With ``--baseline REV`` every case also runs on the package as committed at
``REV`` (``git archive`` into a temporary folder, first on ``PYTHONPATH``),
alternating with the current code, so both see the same machine load; the
table gives both and their ratios.

Run (15 minutes with ``--baseline`` on a 2-core VM shared with other work; the 6000 x 6000
cases dominate; ``--sizes 2000`` for a quick look):

    python bench/deblur_large.py --baseline main --json bench/results/deblur-large.json
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from jsonfile import write_atomic  # noqa: E402

NOISE = 0.005
SEED = 0
MOTION = ["--motion", "9", "30", "--decay", "0.85"]
GAUSSIAN = ["--gaussian", "1"]

#: (name, picture, size, PSF options, other options), the most telling first (the JSON is written after every
#: case, so a run stopped early keeps them). Large tikhonov runs stop after a few CG iterations: the
#: iterations' cost scales with their number, what is measured is the rest and a few iterations.
CASES = [
    ("default, unknown", "grey", 2000, MOTION, []),
    ("default, unknown", "rgb", 2000, MOTION, []),
    ("gaussian (tikhonov), unknown, --maxiter 1", "grey", 6000, GAUSSIAN, ["--maxiter", "1"]),
    ("exact, unknown", "grey", 6000, MOTION, ["--method", "exact"]),
    ("default, unknown, --maxiter 3", "grey", 6000, MOTION, ["--maxiter", "3"]),
    ("tikhonov, zero", "grey", 2000, MOTION, ["--method", "tikhonov", "--boundary", "zero"]),
    ("exact, unknown", "grey", 2000, MOTION, ["--method", "exact"]),
    ("gaussian (tikhonov), unknown", "grey", 2000, GAUSSIAN, []),
    ("default, zero", "grey", 2000, MOTION, ["--boundary", "zero"]),
    ("tikhonov, unknown", "grey", 2000, MOTION, ["--method", "tikhonov"]),
    ("exact, zero", "grey", 2000, MOTION, ["--method", "exact", "--boundary", "zero"]),
    ("tikhonov, zero, --maxiter 3", "grey", 6000, MOTION, ["--method", "tikhonov", "--boundary", "zero",
                                                          "--maxiter", "3"]),
    ("exact, zero", "grey", 6000, MOTION, ["--method", "exact", "--boundary", "zero"]),
]


def make_input(folder: Path, picture: str, size: int, psf_options: list[str]) -> Path:
    """The blurred, noisy 8-bit PNG for a case (made once per picture, size and PSF)."""
    from PIL import Image
    from scipy.ndimage import gaussian_filter
    from scipy.signal import fftconvolve
    from skimage import data, transform

    from invconv_cupy.cli.psf import gaussian_psf, motion_psf

    name = f"{picture}{size}-{'motion' if psf_options is MOTION else 'gaussian'}.png"
    path = folder / name
    if path.exists():
        return path
    rng = np.random.default_rng(SEED)
    scene = data.camera() / 255.0 if picture == "grey" else data.astronaut() / 255.0
    channels = scene.shape[2:]
    scene = transform.resize(scene, (size, size) + channels, order=1)
    texture = gaussian_filter(rng.standard_normal((size, size) + channels), (0.7, 0.7) + (0,) * len(channels))
    scene = np.clip(scene + 0.05 * texture, 0, 1)
    psf = motion_psf(9, 30, 0.85) if psf_options is MOTION else gaussian_psf(1)
    if channels:
        psf = psf[:, :, None]
    blurred = fftconvolve(scene, psf, mode="same", axes=(0, 1)) + NOISE * rng.standard_normal(scene.shape)
    Image.fromarray(np.rint(np.clip(blurred, 0, 1) * 255).astype(np.uint8)).save(path)
    return path


def measure(image: Path, options: list[str], pythonpath: str | None, folder: Path) -> dict:
    """Run ``apply`` once under ``/usr/bin/time -v``: wall and CPU (user + system) seconds, peak memory (MB), report."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    output = folder / f"out-{os.getpid()}.png"
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "invconv_cupy.cli", "apply", str(image),
               *options, "-o", str(output), "--force", "--device", "cpu"]
    # Run outside the repository: ``python -m`` puts the working folder first on sys.path, before PYTHONPATH.
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=folder)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", done.stderr)[1]
    seconds = sum(float(part) * 60**i for i, part in enumerate(reversed(wall.split(":"))))
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1]) / 1024
    cpu = sum(float(re.search(rf"{kind} time \(seconds\): ([\d.]+)", done.stderr)[1]) for kind in ("User", "System"))
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_mb": peak, "report": done.stdout.strip()}


def baseline_tree(revision: str, folder: Path) -> tuple[str, str]:
    """The package as committed at ``revision``, unpacked into ``folder``: its path for ``PYTHONPATH``, and the commit."""
    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                          cwd=Path(__file__).parent, check=True).stdout.strip()
    archive = subprocess.run(["git", "archive", revision], capture_output=True, cwd=root, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    commit = subprocess.run(["git", "rev-parse", revision], capture_output=True, text=True, cwd=root, check=True)
    return str(folder), commit.stdout.strip()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 6000], help="the sizes to run (2000, 6000)")
    parser.add_argument("--baseline", metavar="REV", help="also run every case on the code at this git revision")
    parser.add_argument("--json", type=Path, help="write every case's numbers here")
    parser.add_argument("--work", type=Path, help="folder for the inputs (kept; default: a temporary one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch) / "work"
        work.mkdir(parents=True, exist_ok=True)
        baseline, commit = None, None
        if args.baseline:
            (Path(scratch) / "baseline").mkdir()
            baseline, commit = baseline_tree(args.baseline, Path(scratch) / "baseline")
        load = os.getloadavg()[0]
        print(f"load average at the start: {load:.2f} on {os.cpu_count()} CPUs")
        rows = []
        for name, picture, size, psf_options, options in CASES:
            if size not in args.sizes:
                continue
            image = make_input(work, picture, size, psf_options)
            row = {"case": name, "picture": picture, "size": size, "options": psf_options + options}
            if baseline:
                row["baseline"] = measure(image, psf_options + options, baseline, work)
            row["current"] = measure(image, psf_options + options, None, work)
            row["load"] = os.getloadavg()[0]
            rows.append(row)
            runs = [key for key in ("baseline", "current") if key in row]
            line = ", ".join(f"{key} {row[key]['seconds']:.1f} s ({row[key]['cpu_seconds']:.1f} s CPU) "
                             f"{row[key]['peak_mb']:.0f} MB" for key in runs)
            print(f"{picture} {size} {' '.join(psf_options)}, {name}: {line} (load {row['load']:.2f})", flush=True)
            for key in ("baseline", "current"):
                if key in row:
                    print(f"    {key}: {row[key]['report']}", flush=True)
            if args.json:  # after every case: a long run stopped early keeps what it measured
                write_atomic(args.json, {"date": time.strftime("%Y-%m-%d"), "baseline": args.baseline,
                                         "baseline_commit": commit, "cpus": os.cpu_count(), "cases": rows})
    print()
    runs = ["baseline", "current"] if baseline else ["current"]
    print("| picture | PSF | case | " + " | ".join(f"{key} s | CPU s | MB" for key in runs) + " |"
          + (" CPU ratio | memory ratio |" if baseline else ""))
    print("| --- | --- | --- |" + " ---: | ---: | ---: |" * len(runs) + (" ---: | ---: |" if baseline else ""))
    for row in rows:
        psf = "motion 9 30 0.85" if row["options"][0] == "--motion" else "gaussian 1"
        cells = [f"{row['picture']} {row['size']}", psf, row["case"]]
        for key in runs:
            cells += [f"{row[key]['seconds']:.1f}", f"{row[key]['cpu_seconds']:.1f}", f"{row[key]['peak_mb']:.0f}"]
        if baseline:
            cells += [f"{row['current']['cpu_seconds'] / row['baseline']['cpu_seconds']:.2f}",
                      f"{row['current']['peak_mb'] / row['baseline']['peak_mb']:.2f}"]
        print("| " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()
