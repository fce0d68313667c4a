"""A smoke solve: does our solve and its backward run on this GPU and agree with the NumPy path?

    python bench/gpu_smoke.py

Runs ``solve``, ``solve_vjp`` and solve_vjp's two kernels (the transposed solve,
the weight gradient) on small float32 and float64 cases through the device layer
(``gpu_layer.load``), each checked against the float64 NumPy path before a short
timing. Exit status 0 when all pass, 1 otherwise. The GPU check's second phase:
if this fails, the benchmarks' numbers would not mean much.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from gpu_cases import MEASUREMENTS, Case  # noqa: E402

CASES = {"smoke_float32": Case(3, 5, 17, 19, 3, "float32"), "smoke_float64": Case(3, 5, 17, 19, 3, "float64")}
LABELS = ("solve", "solve_vjp", "solve_vjp_transposed_solve", "solve_vjp_weight_grad")


def main() -> int:
    import gpu_layer
    from gpu_measure import DeviceLost, Runner

    try:
        layer = gpu_layer.load()
    except RuntimeError as exc:
        print(f"smoke: {exc}", flush=True)
        return 1
    failed = False
    with tempfile.TemporaryDirectory() as scratch:
        for name, case in CASES.items():
            runner = Runner(layer, name, case, budget_s=0.2, deadline=time.monotonic() + 60,
                            partial_path=Path(scratch) / f"{name}.json",
                            measurements=[m for m in MEASUREMENTS if m.label in LABELS])
            try:
                runner.run()
            except DeviceLost as lost:
                print(f"{name}: {lost}", flush=True)
                return 1
            errors = runner.report["errors"]
            failed |= bool(errors) or len(runner.report["medians_ms"]) != len(LABELS)
            print(f"{name}: {'FAILED ' + str(errors) if errors else 'ok'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
