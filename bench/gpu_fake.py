"""A fake device layer that raises in chosen places: the GPU check's dry run on a CPU.

Selected by ``$INVCONV_GPU_FAKE`` (see ``gpu_layer.load``), whose value lists
faults as ``kind@target`` separated by ``;`` (empty: no faults). Targets:

- ``CASE:LABEL`` (``*`` for any case or label): one measurement of a case.
  ``error`` raises when it runs; ``sticky`` raises and leaves the device
  unusable (as an illegal address does); ``crash`` aborts the process (SIGABRT);
  ``wrong`` returns a wrong output; ``timing`` raises while it is being timed;
  ``sigint`` sends SIGINT to the process group (what a time limit does);
  ``hang`` sleeps until killed.
- ``CASE``: ``error`` makes the case's set-up fail.
- ``phase:NAME``: ``gpu_check.py`` replaces the phase's command by
  ``python bench/gpu_fake.py phase KIND``: ``ok``, ``fail`` (exit 1) or ``hang``
  (ignores SIGINT, so only the kill after the grace period ends it).

Without faults every "device" output is the float64 reference rounded to the
case's dtype, so the checks pass; cases are shrunk to at most 2 x 4 x 12 x 12,
and times come from the host clock.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from gpu_layer import make_inputs  # noqa: E402

MEASUREMENT_FAULTS = ("error", "sticky", "crash", "wrong", "timing", "sigint", "hang")
PHASE_FAULTS = ("ok", "fail", "hang")


def parse(spec: str) -> dict:
    """``{target: kind}`` from ``"kind@target;..."``; raises ValueError naming a bad entry."""
    faults = {}
    for entry in filter(None, (part.strip() for part in spec.split(";"))):
        kind, at, target = entry.partition("@")
        allowed = PHASE_FAULTS if target.startswith("phase:") else (
            MEASUREMENT_FAULTS if ":" in target else ("error",))
        if not at or not target or kind not in allowed:
            raise ValueError(f"INVCONV_GPU_FAKE: bad fault {entry!r}; expected KIND@CASE:LABEL "
                             f"({', '.join(MEASUREMENT_FAULTS)}), error@CASE or KIND@phase:NAME "
                             f"({', '.join(PHASE_FAULTS)})")
        faults[target] = kind
    return faults


def phase_fault(spec: str, phase: str):
    """The fault ``spec`` sets for phase ``phase`` (``ok``/``fail``/``hang``), or None."""
    return parse(spec).get(f"phase:{phase}")


class _Event:
    """A host-clock stand-in for a CUDA event; ``broken`` raises in the timing."""

    def __init__(self, broken):
        self.broken, self.t = broken, None

    def record(self):
        if self.broken:
            raise RuntimeError("fake: injected failure in the timing (event record)")
        self.t = time.perf_counter()

    def synchronize(self):
        pass

    def elapsed_time(self, end):
        return 1e3 * (end.t - self.t)


class FakeCase:
    def __init__(self, name, case, seed):
        self.name, self.case = name, case
        self.w, self.y, self.g = make_inputs(case, seed)
        import gpu_reference

        self.x = gpu_reference.solve(self.y, self.w).astype(case.dtype)

    def host(self):
        return {"y": self.y, "w": self.w, "g": self.g, "x": self.x}


class FakeLayer:
    """NumPy stand-ins for the CUDA layer, with the faults of ``spec``."""

    fake = True

    def __init__(self, spec: str):
        self.faults = parse(spec)
        self.lost = None

    def _fault(self, name, label=None):
        keys = [name, "*"] if label is None else [f"{name}:{label}", f"{name}:*", f"*:{label}", "*:*"]
        return next((self.faults[k] for k in keys if k in self.faults), None)

    def info(self):
        return {"name": "fake device (NumPy; $INVCONV_GPU_FAKE)", "fake": True}

    def tf32_defaults(self):
        return {"cudnn.allow_tf32": True, "cuda.matmul.allow_tf32": False}

    def limits(self):
        return {"shared_limit": 227 * 1024, "max_threads": 512}

    def scaled(self, case):
        return replace(case, B=min(case.B, 2), C=min(case.C, 4), H=min(case.H, 12), W=min(case.W, 12))

    def prepare(self, name, case, seed):
        if self._fault(name) == "error":
            raise RuntimeError(f"fake: injected failure while setting up case {name}")
        return FakeCase(name, case, seed)

    def callable(self, measurement, ctx):
        from gpu_measure import REFERENCES

        if self.lost:
            raise RuntimeError(f"fake: device lost earlier ({self.lost})")
        fault = self._fault(ctx.name, measurement.label)
        expected = REFERENCES[measurement.expect]({k: np.asarray(v, np.float64) for k, v in ctx.host().items()})
        if measurement.images is not None:
            expected = expected[:measurement.images]
        parts = expected if isinstance(expected, tuple) else (expected,)
        output = tuple(np.asarray(p).astype(ctx.case.dtype) + (1 if fault == "wrong" else 0) for p in parts)
        output = output if isinstance(expected, tuple) else output[0]

        def fn():
            if fault == "error":
                raise RuntimeError(f"fake: injected error in {measurement.label}")
            if fault == "sticky":
                self.lost = f"illegal address in {measurement.label}"
                raise RuntimeError(f"fake: cudaErrorIllegalAddress in {measurement.label}")
            if fault == "crash":
                os.abort()
            if fault == "sigint":
                os.killpg(os.getpgrp(), signal.SIGINT)
                time.sleep(30)  # the signal arrives meanwhile
            if fault == "hang":
                time.sleep(3600)
            return output

        fn.fault = fault
        return fn

    def to_host(self, output):
        return output

    def tf32(self, allowed):
        return contextlib.nullcontext()

    def time(self, fn, timer, runs, budget_s):
        from gpu_timing import median_ms

        broken = getattr(fn, "fault", None) == "timing"
        return median_ms(fn, stream_events=lambda: _Event(broken), runs=runs, budget_s=budget_s)

    def healthy(self):
        return self.lost is None


def run_phase(kind: str) -> int:
    """A phase's stand-in command: ``ok``, ``fail`` or ``hang``."""
    print(f"fake phase: {kind}", flush=True)
    if kind == "hang":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        time.sleep(3600)
    return 1 if kind == "fail" else 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "phase" or sys.argv[2] not in PHASE_FAULTS:
        sys.exit(f"usage: python bench/gpu_fake.py phase {{{','.join(PHASE_FAULTS)}}}")
    sys.exit(run_phase(sys.argv[2]))
