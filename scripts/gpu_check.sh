#!/usr/bin/env bash
# The GPU path in one prepared command (docs/BENCHMARKS.md, "GPU check"): paper-size training of both stages with
# accelerate + FSDP (1 process) + bf16 and their resume, batched generation, streaming latency, peak memory.
# Writes runs/gpu_check/gpu_check.json and prints a table; about 6 minutes on one H200.
#   scripts/gpu_check.sh [--out DIR] [--cache CACHE] [--device cuda:1] [--tiny]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec "$PY" scripts/gpu_check.py "$@"
