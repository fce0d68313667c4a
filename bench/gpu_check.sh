#!/usr/bin/env bash
# The GPU check in one command, for a GPU machine (no network; Python with torch, cupy-cuda13x,
# setuptools, pytest and pytest-benchmark preinstalled):
#
#     bash bench/gpu_check.sh [--budget-s 420] [--slice PHASE=SECONDS ...] [--sanitizer PATH]
#
# Installs this checkout offline, then runs a smoke solve, the gpu-marked tests, the benchmarks,
# the torch benchmarks and compute-sanitizer within a total budget (default 420 s, inside one
# 600 s device call). Logs, summary.json, JUnit XML and gpu-latest.json go to $OUT when it is
# set. Everything else is in bench/gpu_check.py (python bench/gpu_check.py --help).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-$(command -v python3 || command -v python)}"
exec "$PY" bench/gpu_check.py --python "$PY" "$@"
