"""invconv-flow end to end on a tiny budget: train, resume, evaluate, sample, bench, and every bad-input path."""

import json

import numpy as np
import pytest

from flow_cases import one_thread, torch  # noqa: F401 (one_thread: an autouse fixture)

pytest.importorskip("PIL", reason="the cli extra (Pillow) is not installed")

from cli_util import listing  # noqa: E402
from invconv_cupy.flowcli import checkpoint as ckpt  # noqa: E402
from invconv_cupy.flowcli.main import main  # noqa: E402

TINY = ["-K", "1", "--hidden", "8", "--batch", "16"]


def run_cli(capsys, *argv):
    """Run ``invconv-flow argv`` in-process; return (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def keras_npz(tmp_path, rng):
    """Keras' layout: x_train (and x_test) uint8 (N, H, W), smooth enough to be learnable."""
    base = rng.integers(0, 200, (80, 1, 1), dtype=np.uint8)
    images = (base + rng.integers(0, 56, (80, 8, 8))).astype(np.uint8)
    path = tmp_path / "data.npz"
    np.savez(path, x_train=images[:60], x_test=images[60:])
    return path


def test_train_evaluate_sample_resume(tmp_path, capsys, keras_npz):
    run = tmp_path / "run.pt"
    code, out, err = run_cli(capsys, "train", "--data", keras_npz, "-o", run, *TINY, "--steps", 4, "--val-every", 2)
    assert code == 0, err
    assert "54 train, 6 validation images, 256 levels" in out and "step 4:" in out
    saved = ckpt.load(run)
    assert saved["step"] == 4 and [h["step"] for h in saved["history"]] == [2, 4]
    assert saved["model"]["name"] == "inverse_flow" and saved["train"]["batch"] == 16
    assert all(np.isfinite(h["val_bpd"]) and 0 < h["val_bpd"] < 20 for h in saved["history"])

    code, out, err = run_cli(capsys, "evaluate", run, "--draws", 2, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["images"] == 20 and len(result["draw_means"]) == 2
    assert result["ci"][0] < result["bpd"] < result["ci"][1]
    assert np.isclose(np.mean(result["draw_means"]), result["bpd"])

    grid = tmp_path / "grid.png"
    code, out, err = run_cli(capsys, "sample", run, "-o", grid, "--count", 5, "--columns", 3, "--zoom", 2)
    assert code == 0, err
    from PIL import Image

    picture = np.asarray(Image.open(grid))
    assert picture.shape == (2 + 2 * (16 + 2), 2 + 3 * (16 + 2))  # 2 rows, 3 columns, 2-pixel gaps
    assert (picture[:2] == 255).all() and (picture[:, 18:20] == 255).all()
    assert picture[2:18, 2:18].std() > 0  # a drawn image, not a blank cell

    code, out, err = run_cli(capsys, "train", "--resume", run, "--steps", 6, "--val-every", 2)
    assert code == 2 and "--val-every cannot be given with --resume" in err
    code, out, err = run_cli(capsys, "train", "--resume", run, "--steps", 6)
    assert code == 0, err
    assert [h["step"] for h in ckpt.load(run)["history"]] == [2, 4, 6]


def test_resume_continues_exactly(tmp_path, capsys, keras_npz):
    straight, split = tmp_path / "straight.pt", tmp_path / "split.pt"
    common = ["--data", keras_npz, *TINY, "--val-every", 3, "--seed", 5]
    assert run_cli(capsys, "train", *common, "--steps", 6, "-o", straight)[0] == 0
    assert run_cli(capsys, "train", *common, "--steps", 3, "-o", split)[0] == 0
    assert run_cli(capsys, "train", "--resume", split, "--steps", 6)[0] == 0
    a, b = ckpt.load(straight), ckpt.load(split)
    assert a["step"] == b["step"] == 6
    assert a["state"].keys() == b["state"].keys()
    for key, value in a["state"].items():  # bit for bit (and the layers' extra state, their orientations)
        assert torch.equal(b["state"][key], value) if torch.is_tensor(value) else b["state"][key] == value, key
    assert [h["val_bpd"] for h in a["history"]] == [h["val_bpd"] for h in b["history"]]


def test_bench_times_all_three_models(tmp_path, capsys):
    report = tmp_path / "bench.json"
    code, out, err = run_cli(capsys, "bench", "--device", "cpu", "--sizes", 8, "--batch", 4, "--channels", 1,
                             "-K", 1, "--hidden", 4, "--repeats", 2, "--profile", "--json", report)
    assert code == 0, err
    assert "sample inverse_flow/glow" in out and "one sampling pass of inverse_flow" in out
    (entry,) = json.loads(report.read_text())["results"]
    assert set(entry["models"]) == {"inverse_flow", "glow", "solve_sampling_flow"}
    for timings in entry["models"].values():
        assert len(timings["sample"]) == len(timings["train_step"]) == 2 and min(timings["sample"]) > 0
    ratio = entry["ratios"]["sample inverse_flow/glow"]
    medians = {name: np.median(t["sample"]) for name, t in entry["models"].items()}
    assert ratio == pytest.approx(medians["inverse_flow"] / medians["glow"])
    profile = entry["sampling_profile"]
    assert profile["inverse_flow"]["inverse convolutions (conv)"] > 0 and "solves" not in profile["inverse_flow"]
    assert profile["solve_sampling_flow"]["solves"] > 0


def test_diverged_training_exits_2_and_keeps_the_last_checkpoint(tmp_path, capsys, keras_npz, monkeypatch):
    import invconv_cupy.flowcli.train as train

    run = tmp_path / "run.pt"
    assert run_cli(capsys, "train", "--data", keras_npz, "-o", run, *TINY, "--steps", 2)[0] == 0
    saved = run.read_bytes()
    monkeypatch.setattr(train, "dequantize", lambda x, levels, generator: torch.full(x.shape, float("nan")))
    before = listing(tmp_path)
    code, _, err = run_cli(capsys, "train", "--data", keras_npz, "-o", tmp_path / "new.pt", *TINY, "--steps", 2)
    assert code == 2 and "diverged at step 1" in err and "no checkpoint was written" in err
    code, _, err = run_cli(capsys, "train", "--resume", run, "--steps", 4)
    assert code == 2 and err.count("\n") == 1 and f"diverged at step 3 (loss nan); {run} holds step 2" in err
    assert listing(tmp_path) == before and run.read_bytes() == saved


@pytest.fixture
def trained(tmp_path_factory):
    """A tiny trained checkpoint on digits, made once per test that needs it."""
    folder = tmp_path_factory.mktemp("trained")
    assert main(["train", "--data", "digits", "-o", str(folder / "run.pt"), *TINY, "--steps", "1"]) == 0
    return folder / "run.pt"


def _bad_inputs(tmp, trained, npz):
    """(argv, expected message part) for each bad-input path."""
    (tmp / "exists.pt").write_bytes(b"x")
    (tmp / "exists.png").write_bytes(b"x")
    (tmp / "junk.pt").write_bytes(b"not a checkpoint")
    np.save(tmp / "odd.npy", np.zeros((20, 6, 6), np.uint8))
    np.save(tmp / "float.npy", np.zeros((20, 8, 8), np.float32))
    np.save(tmp / "big.npy", np.full((20, 8, 8), 200, np.uint8))
    out = tmp / "new.pt"
    return [
        (["train", "-o", out], "needs --data"),
        (["train", "--data", "digits"], "needs -o/--output"),
        (["train", "--data", "nope", "-o", out], "nope does not exist"),
        (["train", "--data", tmp / "float.npy", "-o", out], "must hold uint8"),
        (["train", "--data", tmp / "odd.npy", "-o", out], "multiples of 2**levels = 4"),
        (["train", "--data", tmp / "big.npy", "--levels", 17, "-o", out], "does not fit 17 levels"),
        (["train", "--data", "digits", "--levels", 17, "-o", out], "own number of levels"),
        (["train", "--data", "digits", "-o", tmp / "exists.pt"], "exists (use --force"),
        (["train", "--data", "digits", "-o", out, "--steps", 0], "--steps must be at least 1"),
        (["train", "--data", "digits", "-o", out, "--lr", "-1"], "--lr must be a positive"),
        (["train", "--data", "digits", "-o", out, "--model", "realnvp"], "invalid choice"),
        (["train", "--data", npz, "-o", out, "--val-fraction", 1.5], "--val-fraction must be between"),
        (["train", "--data", "digits", "-o", out, "--val-fraction", 0.2], "has its own validation split"),
        (["train", "--resume", tmp / "missing.pt"], "does not exist"),
        (["train", "--resume", tmp / "junk.pt"], "cannot read checkpoint"),
        (["train", "--resume", trained, "--hidden", 16], "--hidden cannot be given with --resume"),
        (["train", "--resume", trained, "--steps", 0, "-o", out], "--steps must be at least 1"),
        (["evaluate", tmp / "missing.pt"], "does not exist"),
        (["evaluate", trained, "--draws", 0], "--draws and --batch must be at least 1"),
        (["evaluate", trained, "--data", npz], "the model takes (1, 8, 8)"),
        (["evaluate", trained, "--data", tmp / "big.npy"], "does not fit 17 levels"),
        (["sample", trained, "-o", tmp / "grid.jpg"], "name a .png file"),
        (["sample", trained, "-o", tmp / "exists.png"], "exists (use --force"),
        (["sample", trained, "-o", tmp / "g.png", "--temperature", 0], "--temperature must be a positive"),
        (["sample", trained, "-o", tmp / "g.png", "--count", 0], "--count must be at least 1"),
        (["sample", tmp / "junk.pt", "-o", tmp / "g.png"], "cannot read checkpoint"),
        (["bench", "--sizes", 10, "--device", "cpu"], "multiples of 2**levels = 4"),
        (["bench", "--batch", 0, "--device", "cpu"], "--batch must be at least 1"),
        (["bench", "--sizes", 8, "--json", tmp / "exists.pt", "--device", "cpu"], "exists (use --force"),
        (["frobnicate"], "invalid choice"),
    ]


def test_every_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, trained, rng):
    npz = tmp_path / "user.npz"
    np.savez(npz, x_train=rng.integers(0, 17, (30, 16, 16), dtype=np.uint8))
    cases = _bad_inputs(tmp_path, trained, npz)
    before = listing(tmp_path)
    for argv, expected in cases:
        code, out, err = run_cli(capsys, *argv)
        assert code == 2, (argv, out, err)
        assert err.startswith("invconv-flow: error: ") and err.count("\n") == 1, (argv, err)
        assert expected in err, (argv, err)
        assert listing(tmp_path) == before, argv


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_device_cuda_without_gpu_is_refused(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--data", "digits", "-o", tmp_path / "r.pt", "--device", "cuda")
    assert code == 2 and "--device cuda" in err and not (tmp_path / "r.pt").exists()


def test_console_script_is_installed():
    from importlib.metadata import entry_points

    from invconv_cupy.flowcli.program import run_program

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "invconv-flow"]
    assert script.load() is run_program


@pytest.mark.slow
def test_ctrl_c_keeps_the_last_checkpoint_and_no_temporary_file(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-m", "invconv_cupy.flowcli", "train", "--data", "digits", "-o", run,
                                *TINY, "--steps", "100000", "--val-every", "1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not run.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert run.exists(), process.stderr.read() if process.poll() is not None else "no checkpoint in 120 s"
        time.sleep(0.3)  # inside later steps and checkpoint writes
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130 and err.endswith("invconv-flow: interrupted\n")
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]  # no temporary file left
    assert ckpt.load(run)["step"] >= 1
