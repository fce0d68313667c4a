"""GPU benchmark: our solve and solve_vjp against cuDNN, two launch-per-step baselines and cuSPARSE.

    python bench/gpu_bench.py [--cases NAME ...] [--out bench/results/gpu-latest.json] [--copy-to DIR]
                              [--budget-s 2] [--deadline-s 200] [--run-id ID]
    python bench/gpu_bench.py --dry-run        # no GPU: print each case's plan and launch counts

Each case runs in a process of its own (``gpu_measure.py``), so a sticky CUDA
fault loses that case, not the run. Every timed output is first checked, with
TF32 off, against the float64 NumPy path on the same data; a time is reported
only for an output that passed. After every case the results file is written
atomically (temporary name, then rename), and copied to ``--copy-to`` (default
``$OUT``) when given; SIGINT and SIGTERM stop the running case, keep what it
measured, and write the file before exiting (status 128 + the signal).

Each case gets a ``status``: ``ok``; ``error: <one line>``; ``skipped: time``
(not started before the deadline); ``partial: time (k of n measured)``;
``skipped: interrupted by SIGINT`` / ``partial: interrupted by SIGINT (...)``.
The file also holds the device, the date, the headline ratios (our time over
theirs) with their goals, ratios per case, and what bounds the times
(anti-diagonal steps, launches, bytes moved, per-step latencies). With
``--run-id``, a results file of the same run id is extended instead of replaced
(``gpu_check.py`` runs the headline case and the others as two phases).

The cases, measurements and ratios are tables in ``gpu_cases.py``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import gpu_baselines  # noqa: E402
import jsonfile  # noqa: E402
from interruption import Interrupted, hold, interruptible  # noqa: E402
from gpu_cases import CASE_RATIOS, CASES, GRAPH_RATIOS, HEADLINE, RATIOS, TOLERANCE  # noqa: E402

#: a case process gets its share of the deadline plus this long before it is killed
CASE_GRACE_S = 30.0
#: a case is not started with less time than this before the deadline
MIN_CASE_S = 5.0
METHOD = (
    "Each case in its own process. Each measurement: one call with TF32 off, its output compared with the float64 "
    "NumPy path on the same data (relative error max|out - ref| / max(1, max|ref|) within 'tolerance'); then CUDA "
    "events around each call (each run waits for its end event), warm-up 3, median of up to 100 runs (20 for "
    "per_diagonal and cusparse, 50 for per_step) within --budget-s per measurement. 'solve' and 'solve_vjp' are "
    "the public functions with check=False on CuPy arrays (host work included, as a caller sees it); '*_graph' "
    "replays the same call captured as a CUDA graph (GPU time only). Timing precision per measurement in each "
    "case's 'precision': 'strict' = TF32 off, 'torch-defaults' = torch's TF32 defaults (see 'tf32_defaults'). "
    "'ratios' use the per-call numbers, 'ratios_gpu_time' the graph ones.")


def headline_ratios(case_report, ratios_spec=None):
    medians = case_report.get("medians_ms", {})
    ratios, goals = {}, {}
    for name, (ours, theirs, goal) in (ratios_spec or RATIOS).items():
        goals[name] = goal
        if ours in medians and theirs in medians:
            ratios[name] = medians[ours] / medians[theirs]
    return ratios, goals


def case_ratios(case_report):
    medians = case_report.get("medians_ms", {})
    return {name: medians[ours] / medians[theirs] for name, (ours, theirs) in CASE_RATIOS.items()
            if ours in medians and theirs in medians}


def _process_end(returncode):
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exited with status {returncode}"


def case_status(report, returncode, *, interrupted=None, timed_out=False) -> str:
    """The one-line status of a case from its report and how its process ended."""
    planned = report.get("planned", [])
    done = f"{len(report.get('medians_ms', {}))} of {len(planned)} measured"
    errors = report.get("errors", {})
    if report.get("fatal"):
        return f"error: {report['fatal']}"
    if interrupted is None and timed_out:
        return f"error: over its time limit, killed ({done})"
    if interrupted is None and returncode != 0:
        return f"error: case process {_process_end(returncode)} ({done})"
    if errors:
        label, message = next(iter(errors.items()))
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return f"error: {label}: {message}{more}"
    if interrupted is not None:
        return f"partial: interrupted by {interrupted} ({done})" if report.get("medians_ms") else \
            f"skipped: interrupted by {interrupted}"
    if "time" in report.get("skipped", {}).values():
        return f"partial: time ({done})" if report.get("medians_ms") else "skipped: time"
    if not report.get("finished"):
        return f"error: case process ended early ({done})"
    return "ok"


def summarize(results):
    """Fill in the ratios, goals and overall flags from the cases measured so far."""
    cases = results["cases"]
    for report in cases.values():
        for key in ("device", "tf32_defaults"):
            if key in report and key not in results:
                results[key] = report[key]
    if "medians_ms" in cases.get(HEADLINE, {}):
        ratios, goals = headline_ratios(cases[HEADLINE])
        results["ratios"], results["goals_at_most"] = ratios, goals
        results["goals_met"] = {k: v <= goals[k] for k, v in ratios.items()}
        results["ratios_gpu_time"] = headline_ratios(cases[HEADLINE], GRAPH_RATIOS)[0]
    results["ratios_by_case"] = {name: case_ratios(r) for name, r in cases.items() if "medians_ms" in r}
    results["checks_ok"] = all(check.get("ok") for r in cases.values() for check in r.get("checks", {}).values())
    results["statuses"] = {name: r.get("status") for name, r in cases.items()}
    return results


class Results:
    """The results document and where it goes."""

    def __init__(self, out, copy_to, run_id, names):
        self.out, self.copy_to = Path(out), (Path(copy_to) if copy_to else None)
        previous = jsonfile.read(self.out, {}) if run_id else {}
        if previous.get("run_id") != run_id or not isinstance(previous.get("cases"), dict):
            previous = {}
        self.data = previous or {
            "run_id": run_id,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "method": METHOD, "tolerance": TOLERANCE, "cases": {}}
        self.data["interrupted"] = None
        for name in names:
            self.data["cases"][name] = {"case": asdict(CASES[name]), "status": "pending"}
        self.data["complete"] = False

    def write(self):
        summarize(self.data)
        jsonfile.write_atomic(self.out, self.data)
        if self.copy_to is not None:
            jsonfile.write_atomic(self.copy_to / self.out.name, self.data)


def _run_case_process(name, args, remaining, partial):
    """Start the process that measures case ``name``."""
    command = [sys.executable, str(Path(__file__).resolve()), "--run-case", name, "--partial", str(partial),
               "--budget-s", str(args.budget_s), "--deadline-s", f"{remaining:.1f}"]
    return subprocess.Popen(command)


def run_cases(args) -> int:
    deadline = time.monotonic() + args.deadline_s
    results, running = None, None  # running: (name, process, partial path, started)

    def finish(name, proc, partial, started, **how):
        report = jsonfile.read(partial, {}) or {}
        report.setdefault("case", asdict(CASES[name]))
        report["status"] = case_status(report, proc.returncode, **how)
        report["seconds"] = round(time.monotonic() - started, 2)
        results.data["cases"][name] = report
        results.write()
        print(f"case {name}: {report['status']}", flush=True)

    with interruptible(), tempfile.TemporaryDirectory(prefix="gpu_bench_") as scratch:
        try:
            results = Results(args.out, args.copy_to, args.run_id, args.cases)
            results.data["versions"] = args.versions
            results.write()  # the handlers are in place: from here on a signal leaves a valid file
            for name in args.cases:
                remaining = deadline - time.monotonic()
                if remaining < MIN_CASE_S:
                    results.data["cases"][name] = {"case": asdict(CASES[name]), "status": "skipped: time"}
                    results.write()
                    continue
                partial = Path(scratch) / f"{name}.json"
                running = (name, _run_case_process(name, args, remaining, partial), partial, time.monotonic())
                try:
                    running[1].wait(timeout=remaining + CASE_GRACE_S)
                    timed_out = False
                except subprocess.TimeoutExpired:
                    running[1].kill()
                    running[1].wait()
                    timed_out = True
                finish(*running, timed_out=timed_out)
                running = None
        except Interrupted as sig:
            hold()
            if results is None:
                results = Results(args.out, args.copy_to, args.run_id, args.cases)
            if running is not None:
                proc = running[1]
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                finish(*running, interrupted=str(sig))
            for name in args.cases:
                if results.data["cases"][name].get("status") == "pending":
                    results.data["cases"][name]["status"] = f"skipped: interrupted by {sig}"
            results.data["interrupted"] = str(sig)
            results.write()
            print(f"gpu_bench: interrupted by {sig}; wrote {results.out}", flush=True)
            return 128 + sig.signum
    results.data["complete"] = True
    results.write()
    statuses = results.data["statuses"]
    print(f"wrote {results.out}: " + ", ".join(f"{k}: {v}" for k, v in statuses.items()), flush=True)
    for key in ("ratios", "ratios_gpu_time", "checks_ok"):
        print(f"{key}: {results.data.get(key)}", flush=True)
    return 1 if any(str(s).startswith("error") for s in statuses.values()) else 0


def dry_run():
    """No GPU: each case's plan on an H200-like device (227 KiB opt-in shared memory, 1024 threads)."""
    from invconv_cupy.backends import kernel_solve

    for name, case in CASES.items():
        how = kernel_solve.plan(case.shape, (case.K, case.K), np.dtype(case.dtype).itemsize,
                                shared_limit=227 * 1024, max_threads=kernel_solve.MAX_THREADS)
        counts = {scheme: gpu_baselines.step_launches(scheme, case.shape) for scheme in gpu_baselines.SCHEMES}
        print(f"{name}: {how}; our launches {how.launches}, baseline step launches {counts}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu-latest.json"))
    parser.add_argument("--copy-to", default=os.environ.get("OUT") or None,
                        help="also write the results file into this folder (default: $OUT)")
    parser.add_argument("--budget-s", type=float, default=2.0, help="time budget per measurement")
    parser.add_argument("--deadline-s", type=float, default=200.0, help="start no measurement after this long")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--run-id", default=None, help="extend a results file of this run id")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--run-case", choices=list(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--partial", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.dry_run:
        dry_run()
        return 0
    if args.run_case:
        import gpu_measure

        return gpu_measure.run_case(args.run_case, budget_s=args.budget_s, deadline_s=args.deadline_s,
                                    partial_path=args.partial)
    import gpu_layer

    args.versions = gpu_layer.versions()
    return run_cases(args)


if __name__ == "__main__":
    sys.exit(main())
