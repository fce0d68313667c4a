"""The GPU check on a CPU: ``bash bench/gpu_check.sh`` on a fake device that fails in chosen places.

One run of the whole check (module fixture) with a fault in every place the
first real contact could break: an error in the timing, a wrong output, a sticky
CUDA error, SIGINT in the middle of a case, a phase that hangs past its slice, a
failing phase, a phase with no time. The tests read what it left behind:
``summary.json``, both copies of ``gpu-latest.json``, the log, the calls of a
stand-in compute-sanitizer. A second run is interrupted from outside.
"""

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import gpu_bench  # noqa: E402
import gpu_check  # noqa: E402
import gpu_fake  # noqa: E402
import gpu_sanitize  # noqa: E402
import jsonfile  # noqa: E402
from gpu_cases import CASES, HEADLINE  # noqa: E402

C48, LARGE = "c48_100x48x16x16", "large_1x3x2048x2048"
FAULTS = ";".join([
    "ok@phase:install",                     # no pip install of the checkout from a test
    "hang@phase:gpu_tests",                 # ignores SIGINT: killed at the end of its limit
    "fail@phase:torch_benchmarks",
    f"timing@{HEADLINE}:conv2d",
    f"wrong@{HEADLINE}:per_step",
    f"sticky@{C48}:solve_vjp",
    f"sigint@{LARGE}:per_step",
])
SLICES = {"install": 20, "device": 20, "smoke": 30, "gpu_tests": 1, "headline_benchmark": 40,
          "other_benchmarks": 40, "torch_benchmarks": 20, "sanitizers": 20, "slow_gpu_tests": 0}
BUDGET = sum(SLICES.values())
FAKE_SANITIZER = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/calls"
echo "========= COMPUTE-SANITIZER"
echo "========= ERROR SUMMARY: 0 errors"
"""


def _check_command(out, results, *extra):
    return ["bash", str(REPO / "bench" / "gpu_check.sh"), "--out", str(out), "--results", str(results),
            "--budget-s", str(BUDGET), "--kill-grace-s", "1", *extra]


def _env(faults):
    env = dict(os.environ, INVCONV_GPU_FAKE=faults, PYTHON=sys.executable)
    env.pop("OUT", None)
    return env


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_check")
    sanitizer = root / "sanitizer" / "compute-sanitizer"
    sanitizer.parent.mkdir()
    sanitizer.write_text(FAKE_SANITIZER)
    sanitizer.chmod(0o755)
    slices = [arg for name, s in SLICES.items() for arg in ("--slice", f"{name}={s}")]
    started = time.monotonic()
    done = subprocess.run(_check_command(root / "out", root / "results", "--sanitizer", str(sanitizer), *slices),
                          env=_env(FAULTS), capture_output=True, text=True, timeout=BUDGET + 60)
    wall = time.monotonic() - started
    summary = json.loads((root / "out" / "summary.json").read_text())
    return {"done": done, "wall": wall, "root": root, "summary": summary,
            "phases": {row["phase"]: row for row in summary["phases"]},
            "results": json.loads((root / "results" / "gpu-latest.json").read_text()),
            "out_results": json.loads((root / "out" / "gpu-latest.json").read_text()),
            "sanitizer_calls": (sanitizer.parent / "calls").read_text().splitlines()}


def test_summary_has_every_phase_with_the_status_it_earned(dry_run):
    phases = dry_run["phases"]
    assert dry_run["done"].returncode == 1 and dry_run["summary"]["exit_status"] == 1
    assert list(phases) == [p.name for p in gpu_check.PHASES]
    assert {name: row["status"] for name, row in phases.items()} == {
        "install": "ok", "device": "ok", "smoke": "ok",
        "gpu_tests": "timeout: over its 2 s limit",       # its 1 s slice plus 1 s left unused earlier
        "headline_benchmark": "failed: exit 1",           # a case with errors
        "other_benchmarks": "failed: exit 130",           # SIGINT in the middle of a case
        "torch_benchmarks": "failed: exit 1",
        "sanitizers": "ok",
        "slow_gpu_tests": "skipped: time",
    }
    assert dry_run["summary"]["gpu"] is True and dry_run["summary"]["fake_device"] is True


def test_the_budget_adds_up(dry_run):
    summary, phases = dry_run["summary"], dry_run["phases"]
    assert sum(row["slice_s"] for row in phases.values()) <= summary["budget_s"] == BUDGET
    for row in phases.values():
        if row["limit_s"] is not None:
            assert row["seconds"] <= row["limit_s"] + 1.0, row
    assert phases["gpu_tests"]["seconds"] >= 1.5          # it ran to its limit: SIGINT ignored, then SIGKILL
    rounding = 0.05 * (len(phases) + 1)  # every seconds field is rounded to 0.1 s
    assert sum(row["seconds"] for row in phases.values()) <= summary["seconds"] + rounding
    assert summary["seconds"] <= BUDGET
    assert dry_run["wall"] < BUDGET


def test_results_survive_errors_faults_and_sigint(dry_run):
    results = dry_run["results"]
    assert dry_run["out_results"] == results                     # the $OUT copy is the same document
    assert results["interrupted"] == "SIGINT" and results["complete"] is False
    assert results["device"]["fake"] is True and results["run_id"] == dry_run["summary"]["run_id"]
    cases = results["cases"]
    assert set(cases) == set(CASES)                               # both benchmark phases in one file
    headline = cases[HEADLINE]
    assert headline["status"].startswith("error: conv2d: RuntimeError: fake: injected failure in the timing")
    assert "conv2d" not in headline["medians_ms"] and headline["checks"]["conv2d"]["ok"]   # checked, then timing broke
    assert "check failed" in headline["errors"]["per_step"] and not headline["checks"]["per_step"]["ok"]
    assert "per_step" not in headline["medians_ms"]               # a wrong output gets no time
    assert headline["finished"] and "bounds" in headline
    assert set(headline["medians_ms"]) | set(headline["errors"]) == set(headline["planned"])
    c48 = cases[C48]
    assert c48["status"] == "error: device unusable after solve_vjp: RuntimeError: fake: " \
                            "cudaErrorIllegalAddress in solve_vjp"
    assert list(c48["medians_ms"]) == ["solve", "solve_checked", "solve_graph"]   # what came before the fault
    after = c48["planned"][c48["planned"].index("solve_vjp") + 1:]
    assert after and all(c48["skipped"][label] == "device lost" for label in after)
    large = cases[LARGE]
    assert large["status"].startswith("partial: interrupted by SIGINT (14 of 24 measured)")
    assert "per_step" not in large["medians_ms"] and "solve_tile32" not in large["medians_ms"]
    for report in cases.values():                                 # every reported time passed its check first
        for label in report["medians_ms"]:
            assert report["checks"][label]["ok"] and max(report["checks"][label]["errors"]) < 1e-4
    assert "solve_vs_per_diagonal" in results["ratios"] and "solve_vs_conv2d" not in results["ratios"]
    assert results["checks_ok"] is False


def test_log_sanitizer_and_outputs(dry_run):
    out = dry_run["root"] / "out"
    log = (out / "gpu_check.log").read_text()
    assert "FAILED: gpu_tests, headline_benchmark, other_benchmarks, torch_benchmarks; exit 1" in log
    assert log.count("=== ") >= len(gpu_check.PHASES)
    assert [call.split()[:2] for call in dry_run["sanitizer_calls"]] == [["--tool", "memcheck"],
                                                                           ["--tool", "racecheck"]]
    assert all(call.endswith("gpu_sanitize.py --cases") for call in dry_run["sanitizer_calls"])
    files = sorted(p.name for p in out.iterdir())
    assert files == ["gpu-latest.json", "gpu_check.log", "sanitizer.log", "summary.json"]   # at most 8 come back
    assert dry_run["done"].stdout.strip().splitlines()[-1] == log.strip().splitlines()[-1]


def test_the_check_interrupted_from_outside_writes_everything(tmp_path):
    slices = [arg for name in SLICES for arg in ("--slice", f"{name}={60 if name in ('device', 'headline_benchmark') else 0}")]
    proc = subprocess.Popen(_check_command(tmp_path / "out", tmp_path / "results", *slices),
                            env=_env(f"hang@{HEADLINE}:solve"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    results_file = tmp_path / "results" / "gpu-latest.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        summary = jsonfile.read(tmp_path / "out" / "summary.json", {})
        rows = {row["phase"]: row["status"] for row in summary.get("phases", [])}
        if rows.get("headline_benchmark") == "running" and results_file.exists():
            break
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 128 + signal.SIGINT, output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    rows = {row["phase"]: row["status"] for row in summary["phases"]}
    assert summary["interrupted"] == "SIGINT" and summary["exit_status"] == 130
    assert rows["device"] == "ok" and rows["headline_benchmark"] == "interrupted by SIGINT"
    after = [p.name for p in gpu_check.PHASES][[p.name for p in gpu_check.PHASES].index("headline_benchmark") + 1:]
    assert all(rows[name] == "skipped: interrupted by SIGINT" for name in after)
    results = json.loads(results_file.read_text())
    assert results["interrupted"] == "SIGINT"
    assert results["cases"][HEADLINE]["status"] == "skipped: interrupted by SIGINT"


def test_slices_scale_with_the_budget_and_never_exceed_it():
    default = gpu_check.slices(gpu_check.DEFAULT_BUDGET_S)
    assert list(default) == [p.name for p in gpu_check.PHASES]
    assert sum(default.values()) <= gpu_check.DEFAULT_BUDGET_S == 420
    small = gpu_check.slices(100)
    assert sum(small.values()) <= 100 and small["gpu_tests"] == pytest.approx(default["gpu_tests"] * 100 / 420, abs=0.1)
    assert gpu_check.slices(100, {"install": 1})["install"] == 1
    with pytest.raises(ValueError, match="add up to .* more than the budget of 100 s"):
        gpu_check.slices(100, {"install": 90})
    with pytest.raises(ValueError, match="unknown phase 'instal'"):
        gpu_check.slices(420, {"instal": 1})


@pytest.mark.parametrize("argv, message", [
    (["--budget-s", "50", "--slice", "install=45"], "more than the budget of 50 s"),
    (["--budget-s", "0"], "--budget-s must be positive"),
    (["--sanitizer", "/nonexistent/compute-sanitizer"], "does not exist"),
])
def test_bad_arguments_exit_2_with_one_line(capsys, argv, message):
    assert gpu_check.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_case_status_says_what_happened():
    planned = {"planned": ["a", "b", "c"]}
    status = gpu_bench.case_status
    assert status({**planned, "medians_ms": {"a": 1, "b": 1, "c": 1}, "finished": True}, 0) == "ok"
    assert status({**planned, "fatal": "device unusable after b: X"}, 3) == "error: device unusable after b: X"
    assert status({**planned, "medians_ms": {"a": 1}}, -6) == "error: case process killed by SIGABRT (1 of 3 measured)"
    assert status({**planned, "errors": {"b": "E1", "c": "E2"}, "finished": True}, 0) == "error: b: E1 (and 1 more)"
    assert status({**planned, "medians_ms": {"a": 1}}, -2, interrupted="SIGINT") == \
        "partial: interrupted by SIGINT (1 of 3 measured)"
    assert status(planned, -2, interrupted="SIGTERM") == "skipped: interrupted by SIGTERM"
    assert status({**planned, "medians_ms": {"a": 1}, "skipped": {"b": "time", "c": "time"}, "finished": True}, 0) == \
        "partial: time (1 of 3 measured)"
    assert status({**planned, "skipped": {"a": "time"}}, 0) == "skipped: time"
    assert status({**planned, "medians_ms": {"a": 1}}, 0, timed_out=True) == \
        "error: over its time limit, killed (1 of 3 measured)"
    assert status(planned, 0) == "error: case process ended early (0 of 3 measured)"


def test_an_interrupted_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    jsonfile.write_atomic(path, {"cases": {"a": 1}})

    def broken(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(KeyboardInterrupt):
        jsonfile.write_atomic(path, {"cases": {"a": 2}})
    assert json.loads(path.read_text()) == {"cases": {"a": 1}}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]          # no temporary file left
    assert jsonfile.read(tmp_path / "missing.json", "default") == "default"


def test_fault_specs_are_checked():
    assert gpu_fake.parse("") == {}
    assert gpu_fake.parse(f"wrong@{HEADLINE}:solve; hang@phase:smoke") == {f"{HEADLINE}:solve": "wrong",
                                                                           "phase:smoke": "hang"}
    for bad in ("explode@x:solve", "wrong", "sticky@case_only", "crash@phase:smoke"):
        with pytest.raises(ValueError, match="INVCONV_GPU_FAKE: bad fault"):
            gpu_fake.parse(bad)


def test_find_sanitizer_explicit_wheel_folder_or_none(tmp_path, monkeypatch):
    wheel = tmp_path / "nvidia_cuda_sanitizer_api-13.0.85-py3-none-manylinux_2_25_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("nvidia/cu13/bin/compute-sanitizer", "#!/bin/sh\n")
        archive.writestr("nvidia/cu13/lib/libTreeLauncherTargetInjection.so", "")
    tool = gpu_sanitize.find_sanitizer(str(wheel))
    assert tool.name == "compute-sanitizer" and os.access(tool, os.X_OK)
    assert (tool.parent / "libTreeLauncherTargetInjection.so").exists()   # beside the executable
    carried = tmp_path / "carried"
    carried.mkdir()
    (carried / wheel.name).write_bytes(wheel.read_bytes())
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("COMPUTE_SANITIZER", raising=False)
    monkeypatch.setattr(gpu_sanitize, "SYSTEM", (tmp_path / "no-toolkit",))
    assert gpu_sanitize.find_sanitizer(carried=carried).name == "compute-sanitizer"
    assert gpu_sanitize.find_sanitizer(carried=tmp_path / "nothing") is None
    with pytest.raises(FileNotFoundError):
        gpu_sanitize.find_sanitizer(str(tmp_path / "missing"))


@pytest.mark.parametrize("output, code, expect", [
    ("========= ERROR SUMMARY: 3 errors", 1, 1),
    ("========= Error: Device not supported\n========= Error: couldn't find exit code.", 255, 75),
    ("========= ERROR SUMMARY: 0 errors", 0, 0),
])
def test_sanitizer_results_are_read(tmp_path, output, code, expect):
    tool = tmp_path / "compute-sanitizer"
    tool.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\nexit {code}\n")
    tool.chmod(0o755)
    assert gpu_sanitize.run_tools(tool, ("memcheck",), log=tmp_path / "log") == expect
    assert output.splitlines()[0] in (tmp_path / "log").read_text()


def test_sanitizer_cases_launch_every_entry_point_on_the_emulator(monkeypatch, capsys):
    """The cases compute-sanitizer runs, under the emulator: right answers, every entry point
    launched; an entry point no case launches fails the run."""
    from invconv_cupy import kernel_source
    from invconv_cupy.backends import emulate_backend

    real = kernel_source.entry_points
    monkeypatch.setattr(kernel_source, "entry_points", lambda f: real(f) + (("solve_unlaunched",) if f == "solve"
                                                                            else ()))
    assert gpu_sanitize.run_cases(emulate_backend.device) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "FAIL entry points no case launched: solve.solve_unlaunched (add a case to " \
                        "bench/gpu_sanitize.py)"
    assert lines[:-1] and all(line.startswith("ok ") for line in lines[:-1])
    launched = {name for line in lines[:-1] for name in line.split("; ")[1].split(", ")}
    assert launched == {f"{f}.{e}" for f in kernel_source.families() for e in real(f)}

