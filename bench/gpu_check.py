"""The GPU check: one command that installs, tests and benchmarks on a GPU machine within a time budget.

    bash bench/gpu_check.sh [--budget-s 420] [--out DIR] [--results DIR] [--slice PHASE=SECONDS ...]
                            [--sanitizer PATH] [--kill-grace-s 10] [--python PY]

Phases, in order of value (each in its own process group, with its own time limit):

    install              pip install --no-build-isolation --no-deps -e .  (offline)
    device               versions and the device (bench/gpu_layer.py); no device: GPU phases are skipped
    smoke                a small solve and its backward against NumPy (bench/gpu_smoke.py)
    gpu_tests            python -m pytest -m "gpu and not slow" tests  (JUnit XML)
    headline_benchmark   bench/gpu_bench.py on the headline case
    other_benchmarks     bench/gpu_bench.py on the other cases (same results file)
    torch_benchmarks     pytest -m gpu bench/test_torch_*.py --benchmark-enable  (JSON)
    sanitizers           memcheck and racecheck over every kernel entry point (bench/gpu_sanitize.py)
    slow_gpu_tests       python -m pytest -m "gpu and slow" tests  (the >2^31-element case)

Each phase gets a slice of the budget (:data:`PHASES` at the default 420 s,
scaled to ``--budget-s``; ``--slice`` sets one); the slices add up to at most
the budget. A phase may also use as much again of the time earlier phases left
unused, never past the budget. At its limit a phase gets SIGINT (the benchmark
then writes what it measured), and SIGKILL ``--kill-grace-s`` later. A phase
whose limit is below its minimum is ``skipped: time``. The run writes
``summary.json`` (phase, status, seconds, slice, limit) after every phase and
prints a table at the end. Exit status 0 when every phase that ran passed; 1
otherwise; 2 for bad arguments; 128 + the signal when interrupted.

Outputs (at most 8 files, for the device tool): in ``--out`` (default ``$OUT``,
else ``bench/results/gpu-check``): gpu_check.log, summary.json, gpu-latest.json,
gpu-tests.xml, gpu-tests-slow.xml, torch-bench.json, sanitizer.log; in
``--results`` (default ``bench/results``): gpu-latest.json.

``$INVCONV_GPU_FAKE`` runs everything on a fake device (``bench/gpu_fake.py``);
its ``KIND@phase:NAME`` faults replace a phase's command.
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).parent))

import jsonfile  # noqa: E402
from interruption import Interrupted, hold, interruptible  # noqa: E402
from gpu_cases import CASES, HEADLINE  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BUDGET_S = 420.0
#: per measurement, in the benchmark phases
MEASUREMENT_BUDGET_S = 1.0
#: the benchmark stops starting measurements this long (at most a quarter of the limit) before its phase's limit
BENCH_MARGIN_S = 25.0


@dataclass(frozen=True)
class Phase:
    name: str
    slice_s: float                        # at the default budget
    min_s: float                          # skipped for time below this limit (or below its slice, if smaller)
    command: Callable[["Check", float], list]
    needs_gpu: bool = True
    needs_sanitizer: bool = False
    #: exit status -> status, for statuses other than "failed: ..."
    statuses: dict = field(default_factory=dict)


def _bench(names):
    def command(check, limit):
        return [check.python, "bench/gpu_bench.py", "--cases", *names, "--out", str(check.results / "gpu-latest.json"),
                "--copy-to", str(check.out), "--run-id", check.run_id, "--budget-s", str(MEASUREMENT_BUDGET_S),
                "--deadline-s", f"{limit - min(BENCH_MARGIN_S, limit / 4):.0f}"]
    return command


def _pytest(marker, junit):
    def command(check, limit):
        return [check.python, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", "-m", marker,
                f"--junitxml={check.out / junit}", *check.hypothesis_ignores(), "tests"]
    return command


PHASES = [
    Phase("install", 40, 5, lambda c, limit: [c.python, "-m", "pip", "install", "--no-build-isolation", "--no-deps",
                                              "--no-input", "-e", "."], needs_gpu=False),
    Phase("device", 20, 3, lambda c, limit: [c.python, "bench/gpu_layer.py"], needs_gpu=False,
          statuses={3: "failed: no usable CUDA device"}),
    Phase("smoke", 30, 5, lambda c, limit: [c.python, "bench/gpu_smoke.py"]),
    Phase("gpu_tests", 90, 10, _pytest("gpu and not slow", "gpu-tests.xml")),
    Phase("headline_benchmark", 60, 10, _bench([HEADLINE])),
    Phase("other_benchmarks", 60, 10, _bench([name for name in CASES if name != HEADLINE])),
    Phase("torch_benchmarks", 40, 10, lambda c, limit: [
        c.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "--benchmark-enable",
        "--benchmark-max-time=0.5", f"--benchmark-json={c.out / 'torch-bench.json'}",
        "bench/test_torch_adapter.py", "bench/test_torch_flow.py", "bench/test_torch_dispatch.py"]),
    Phase("sanitizers", 50, 10, lambda c, limit: [c.python, "bench/gpu_sanitize.py", "--sanitizer", str(c.sanitizer),
                                                  "--log", str(c.out / "sanitizer.log")],
          needs_sanitizer=True, statuses={75: "skipped: compute-sanitizer cannot run on this machine"}),
    Phase("slow_gpu_tests", 30, 10, _pytest("gpu and slow", "gpu-tests-slow.xml")),
]


def slices(budget_s, overrides=None) -> dict:
    """Seconds per phase: the defaults scaled to ``budget_s``, then ``overrides``; raises ValueError
    when a name is unknown or the slices add up to more than the budget."""
    names = [p.name for p in PHASES]
    scale = budget_s / DEFAULT_BUDGET_S
    out = {p.name: round(p.slice_s * scale, 1) for p in PHASES}
    for name, seconds in (overrides or {}).items():
        if name not in out:
            raise ValueError(f"--slice: unknown phase {name!r}; the phases are {', '.join(names)}")
        if seconds < 0:
            raise ValueError(f"--slice: {name} must be at least 0 seconds, got {seconds}")
        out[name] = float(seconds)
    total = sum(out.values())
    if total > budget_s + 1e-9:
        raise ValueError(f"--slice: the phases' slices add up to {total:g} s, more than the budget of {budget_s:g} s")
    return out


class Check:
    """One run of the phases: the budget, the log, the summary."""

    def __init__(self, args):
        self.python, self.budget_s, self.grace_s = args.python, args.budget_s, args.kill_grace_s
        self.out, self.results = Path(args.out), Path(args.results)
        self.out.mkdir(parents=True, exist_ok=True)
        self.slices = args.slices
        self.sanitizer = args.sanitizer_path
        self.fake = os.environ.get("INVCONV_GPU_FAKE")
        self.started = datetime.datetime.now(datetime.timezone.utc)
        self.run_id = self.started.strftime("%Y%m%dT%H%M%SZ") + f"-{os.getpid()}"
        self.start = time.monotonic()
        self.gpu = None
        self.rows = [{"phase": p.name, "status": "pending", "seconds": 0.0, "slice_s": self.slices[p.name],
                      "limit_s": None} for p in PHASES]
        self.logfile = open(self.out / "gpu_check.log", "a", encoding="utf-8")
        self._ignores = None

    def log(self, text):
        print(text, flush=True)
        self.logfile.write(text + "\n")
        self.logfile.flush()

    def hypothesis_ignores(self):
        """``--ignore`` for test files that import hypothesis, when the Python used lacks it."""
        if self._ignores is None:
            has = subprocess.run([self.python, "-c", "import hypothesis"], capture_output=True).returncode == 0
            self._ignores = [] if has else [f"--ignore={p.relative_to(REPO)}" for p in
                                            sorted((REPO / "tests").glob("test_*.py")) if "hypothesis" in p.read_text()]
        return self._ignores

    def elapsed(self):
        return time.monotonic() - self.start

    def write_summary(self, exit_status=None, interrupted=None):
        jsonfile.write_atomic(self.out / "summary.json", {
            "run_id": self.run_id, "started": self.started.isoformat(timespec="seconds"),
            "budget_s": self.budget_s, "seconds": round(self.elapsed(), 1), "gpu": self.gpu,
            "fake_device": self.fake is not None, "sanitizer": str(self.sanitizer) if self.sanitizer else None,
            "interrupted": interrupted, "exit_status": exit_status, "phases": self.rows})

    def limit_for(self, index):
        """The phase's slice, plus what earlier phases left unused (at most its slice again),
        within what is left of the budget."""
        phase = PHASES[index]
        own = self.slices[phase.name]
        unused = sum(self.slices[p.name] for p in PHASES[:index]) - self.elapsed()
        return max(0.0, min(own + min(max(unused, 0.0), own), self.budget_s - self.elapsed()))

    def command(self, phase, limit):
        if self.fake is not None:
            import gpu_fake

            kind = gpu_fake.phase_fault(self.fake, phase.name)
            if kind is not None:
                return [self.python, "bench/gpu_fake.py", "phase", kind]
        return phase.command(self, limit)

    def run_command(self, command, limit):
        """Run ``command`` in its own process group, its output into the log; SIGINT at ``limit``
        less the grace period, SIGKILL at ``limit``. Returns (exit status, timed out)."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, text=True, errors="replace")

        def relay():
            for line in proc.stdout:
                self.log(line.rstrip("\n"))

        reader = threading.Thread(target=relay, daemon=True)
        reader.start()
        grace = min(self.grace_s, limit / 4)
        timed_out = False
        try:
            try:
                proc.wait(timeout=max(0.0, limit - grace))
            except subprocess.TimeoutExpired:
                timed_out = True
                self._stop(proc, grace)
        except Interrupted:
            hold()
            self._stop(proc, 5.0)
            raise
        finally:
            reader.join(timeout=5)
        return proc.returncode, timed_out

    @staticmethod
    def _stop(proc, grace):
        """SIGINT to the process group, SIGKILL ``grace`` seconds later if it is still there."""
        for signum in (signal.SIGINT, signal.SIGKILL):
            try:
                os.killpg(proc.pid, signum)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                continue
        proc.wait()

    def run_phase(self, index):
        phase, row = PHASES[index], self.rows[index]
        if phase.needs_gpu and not self.gpu:
            row["status"] = "skipped: no GPU"
        elif phase.needs_sanitizer and self.sanitizer is None:
            row["status"] = "skipped: no compute-sanitizer"
        else:
            limit = self.limit_for(index)
            row["limit_s"] = round(limit, 1)
            if limit <= 0 or limit < min(phase.min_s, self.slices[phase.name]):
                row["status"] = "skipped: time"
        if row["status"] != "pending":
            self.log(f"=== {phase.name}: {row['status']}")
            return
        command = self.command(phase, limit)
        row["command"] = " ".join(map(str, command))
        self.log(f"=== {phase.name} (limit {limit:.0f} s): {row['command']}")
        row["status"] = "running"
        self.write_summary()
        begin = time.monotonic()
        try:
            rc, timed_out = self.run_command(command, limit)
        finally:
            row["seconds"] = round(time.monotonic() - begin, 1)
        if timed_out:
            row["status"] = f"timeout: over its {limit:.0f} s limit"
        elif rc == 0:
            row["status"] = "ok"
        else:
            row["status"] = phase.statuses.get(rc) or (
                f"failed: killed by {signal.Signals(-rc).name}" if rc < 0 else f"failed: exit {rc}")
        if phase.name == "device":
            self.gpu = rc == 0 and not timed_out
        self.log(f"=== {phase.name}: {row['status']} after {row['seconds']} s")

    def table(self):
        lines = [f"{'phase':20} {'status':58} {'seconds':>7} {'limit':>6}"]
        for row in self.rows:
            status = row["status"] if len(row["status"]) <= 58 else row["status"][:55] + "..."
            limit = "" if row["limit_s"] is None else f"{row['limit_s']:6.0f}"
            lines.append(f"{row['phase']:20} {status:58} {row['seconds']:7.1f} {limit:>6}")
        return "\n".join(lines)

    def run(self) -> int:
        self.log(f"gpu_check: {self.started.isoformat(timespec='seconds')}, python {self.python}, budget "
                 f"{self.budget_s:g} s, output in {self.out}" + (" (FAKE device)" if self.fake is not None else ""))
        self.log("slices: " + ", ".join(f"{name} {s:g} s" for name, s in self.slices.items()))
        self.log(f"compute-sanitizer: {self.sanitizer or 'none found'}")
        with interruptible(), self.logfile:
            try:
                self.write_summary()
                for index in range(len(PHASES)):
                    self.run_phase(index)
                    self.write_summary()
            except Interrupted as sig:
                hold()
                for row in self.rows:
                    if row["status"] == "running":
                        row["status"] = f"interrupted by {sig}"
                    elif row["status"] == "pending":
                        row["status"] = f"skipped: interrupted by {sig}"
                status = 128 + sig.signum
                self.write_summary(status, str(sig))
                self.log(self.table())
                self.log(f"gpu_check: interrupted by {sig} after {self.elapsed():.0f} s; exit {status}")
                return status
            failed = [row["phase"] for row in self.rows if not row["status"].startswith(("ok", "skipped"))]
            status = 1 if failed else 0
            self.write_summary(status)
            self.log(self.table())
            self.log(f"gpu_check: {self.elapsed():.0f} s of {self.budget_s:g}; " + (
                f"FAILED: {', '.join(failed)}" if failed else "every phase that ran passed") + f"; exit {status}")
            return status


def _slice(text):
    name, eq, seconds = text.partition("=")
    try:
        return name, float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PHASE=SECONDS, got {text!r}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="total seconds (default %(default)s)")
    parser.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "bench" / "results" / "gpu-check"),
                        help="logs, summary.json and copies of the results (default: $OUT, else %(default)s)")
    parser.add_argument("--results", default=str(REPO / "bench" / "results"), help="where gpu-latest.json goes")
    parser.add_argument("--slice", type=_slice, action="append", default=[], metavar="PHASE=SECONDS")
    parser.add_argument("--sanitizer", help="compute-sanitizer to use: an executable, a wheel, or a folder with "
                                            "either (default: $COMPUTE_SANITIZER, PATH, the CUDA toolkit, .sanitizer/)")
    parser.add_argument("--kill-grace-s", type=float, default=10.0, help="SIGINT this long before SIGKILL")
    parser.add_argument("--python", default=sys.executable, help="the Python that runs the phases")
    args = parser.parse_args(argv)
    try:
        if args.budget_s <= 0:
            raise ValueError(f"--budget-s must be positive, got {args.budget_s:g}")
        args.slices = slices(args.budget_s, dict(args.slice))
        import gpu_sanitize

        args.sanitizer_path = gpu_sanitize.find_sanitizer(args.sanitizer)
    except (ValueError, OSError) as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2
    return Check(args).run()


if __name__ == "__main__":
    sys.exit(main())
