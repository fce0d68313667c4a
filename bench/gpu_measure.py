"""Measuring one case of the GPU benchmark (runs in a process of its own; see ``gpu_bench.py``).

For each applicable :class:`gpu_cases.Measurement`, in table order: build the
callable, run it once with TF32 off and compare its output with the float64
NumPy reference (``gpu_reference``); only if that passes, time it with CUDA
events (warm-up, median). After every measurement the case's report is written
to its partial file, atomically, so whatever kills the process, what was
measured is kept. A failure is recorded and the next measurement runs, unless
the device is lost (a sticky CUDA error): then the case stops.
"""

from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np

import gpu_reference as ref
import jsonfile
from gpu_cases import CASES, MEASUREMENTS, TOLERANCE
from gpu_layer import Skip

#: expect -> reference(host data), host data: float64 copies of y, w, g and the x the measurements used
REFERENCES = {
    "x": lambda d: ref.solve(d["y"], d["w"]),
    "vjp": lambda d: ref.solve_vjp(d["g"], d["x"], d["w"]),
    "grad_y": lambda d: ref.solve_vjp(d["g"], d["x"], d["w"])[0],
    "grad_w": lambda d: ref.solve_vjp(d["g"], d["x"], d["w"])[1],
    "conv2d": lambda d: ref.conv2d_same(d["x"], d["w"]),
    "conv2d_backward": lambda d: ref.conv2d_same_backward(d["g"], d["x"], d["w"]),
}


class DeviceLost(RuntimeError):
    """The device cannot run anything more in this process."""


def one_line(exc) -> str:
    """``Type: message`` on one line, at most 300 characters."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= 300 else text[:297] + "..."


def _outputs(host):
    return host if isinstance(host, tuple) else (host,)


def compare(host, expected, dtype):
    """The check of one output (or tuple of outputs) against its float64 reference."""
    actual, wanted = _outputs(host), _outputs(expected)
    if len(actual) != len(wanted):
        return {"ok": False, "errors": [], "tolerance": TOLERANCE[dtype],
                "reason": f"{len(actual)} outputs, expected {len(wanted)}"}
    errors = [ref.relative_error(a, b) for a, b in zip(actual, wanted)]
    return {"ok": all(e <= TOLERANCE[dtype] for e in errors), "errors": errors, "tolerance": TOLERANCE[dtype]}


class Runner:
    """Runs the measurements of one case on ``layer``, keeping the report and writing it out."""

    def __init__(self, layer, name, case, *, budget_s, deadline, partial_path, seed=0, measurements=MEASUREMENTS):
        self.layer, self.name, self.case = layer, name, case
        self.data_case = layer.scaled(case)
        self.budget_s, self.deadline, self.partial_path, self.seed = budget_s, deadline, partial_path, seed
        self.planned = [m for m in measurements if m.applies(case)]
        self.report = {"case": asdict(self.data_case), "planned": [m.label for m in self.planned],
                       "medians_ms": {}, "runs": {}, "checks": {}, "errors": {}, "skipped": {}, "precision": {},
                       "finished": False}
        self._references = {}
        self._host = None

    def save(self):
        jsonfile.write_atomic(self.partial_path, self.report)

    def expected(self, ctx, measurement):
        key = (measurement.expect, measurement.images)
        if key not in self._references:
            if self._host is None:
                self._host = {k: np.asarray(v, np.float64) for k, v in ctx.host().items()}
            value = REFERENCES[measurement.expect](self._host)
            if measurement.images is not None:
                value = value[:measurement.images]
            self._references[key] = value
        return self._references[key]

    def measure(self, measurement, ctx):
        label, report = measurement.label, self.report
        if time.monotonic() > self.deadline:
            report["skipped"][label] = "time"
            return
        report["precision"][label] = measurement.precision
        try:
            fn = self.layer.callable(measurement, ctx)
            with self.layer.tf32(False):
                host = self.layer.to_host(fn())
            check = report["checks"][label] = compare(host, self.expected(ctx, measurement), self.case.dtype)
            if not check["ok"]:
                report["errors"][label] = (f"check failed: relative errors {check['errors']} against the float64 "
                                           f"reference, tolerance {check['tolerance']}" + (
                                               f" ({check['reason']})" if "reason" in check else ""))
                print(f"  {label}: FAILED {report['errors'][label]}", flush=True)
                return
            with self.layer.tf32(None if measurement.precision == "torch-defaults" else False):
                median, samples = self.layer.time(fn, measurement.timer, measurement.runs, self.budget_s)
        except Skip as why:
            report["skipped"][label] = str(why)
        except Exception as exc:  # noqa: BLE001 -- one measurement failing must not stop the others
            report["errors"][label] = one_line(exc)
            print(f"  {label}: FAILED {report['errors'][label]}", flush=True)
            if not self.layer.healthy():
                raise DeviceLost(f"device unusable after {label}: {report['errors'][label]}") from exc
        else:
            report["medians_ms"][label] = median
            report["runs"][label] = len(samples)
            print(f"  {label}: {median:.4f} ms (median of {len(samples)}), relative error "
                  f"{max(check['errors']):.2e}", flush=True)
        finally:
            self.save()

    def bounds(self, ctx):
        """What bounds the case's times: steps, launches, bytes, per-step latencies."""
        from invconv_cupy.backends import kernel_solve

        import gpu_baselines

        case, medians = self.data_case, self.report["medians_ms"]
        how = kernel_solve.plan(case.shape, (case.K, case.K), np.dtype(case.dtype).itemsize, **self.layer.limits())
        steps = case.H + case.W - 1
        out = {"anti_diagonal_steps": steps, "our_launches": how.launches, "our_plan": asdict(how),
               "per_diagonal_launches": gpu_baselines.step_launches("per_diagonal", case.shape),
               "per_step_launches": gpu_baselines.step_launches("per_step", case.shape),
               "bytes_moved_min": 2 * int(np.prod(case.shape)) * np.dtype(case.dtype).itemsize,
               "cusparse_nnz": getattr(ctx, "cusparse_nnz", None)}
        for label, key in (("solve_graph", "graph_us_per_step"), ("solve_one_image", "one_image_us_per_step")):
            if label in medians:  # the dependency chain: time per anti-diagonal step
                out[key] = 1e3 * medians[label] / steps
        return out

    def run(self):
        """Measure everything (or up to the deadline); raises :class:`DeviceLost` when the device is gone."""
        print(f"case {self.name}: {self.data_case}", flush=True)
        self.report["device"] = self.layer.info()
        self.report["tf32_defaults"] = self.layer.tf32_defaults()
        self.save()
        ctx = self.layer.prepare(self.name, self.data_case, self.seed)
        try:
            for measurement in self.planned:
                self.measure(measurement, ctx)
            self.report["bounds"] = self.bounds(ctx)
        except DeviceLost as lost:
            self.report["fatal"] = str(lost)
            for m in self.planned:
                if not any(m.label in self.report[k] for k in ("medians_ms", "errors", "skipped")):
                    self.report["skipped"][m.label] = "device lost"
            raise
        finally:
            self.save()
        self.report["finished"] = True
        self.save()


def run_case(name, *, budget_s, deadline_s, partial_path, seed=0) -> int:
    """The child process's work: measure case ``name`` into ``partial_path``. Exit status 0, or 3
    when the case could not go on (device lost, or its set-up failed; the report says why)."""
    import gpu_layer

    runner = None
    try:
        layer = gpu_layer.load()
        runner = Runner(layer, name, CASES[name], budget_s=budget_s, deadline=time.monotonic() + deadline_s,
                        partial_path=partial_path, seed=seed)
        runner.run()
    except Exception as exc:  # noqa: BLE001 -- written to the report; the parent reports the case
        if runner is None:
            jsonfile.write_atomic(partial_path, {"fatal": one_line(exc), "finished": False})
        else:
            runner.report.setdefault("fatal", one_line(exc))
            runner.save()
        print(f"case {name}: stopped: {one_line(exc)}", flush=True)
        return 3
    return 0
