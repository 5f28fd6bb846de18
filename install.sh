#!/usr/bin/env bash
# Install the workbench and its test extras into the current Python environment.
# torch: an installed torch (e.g. your CUDA build) is kept; otherwise the CPU wheel of
# torch 2.13.0 is installed (on the project's CPU machines it lies on disk, no download).
set -euo pipefail
PY="${PYTHON:-python}"
cd "$(dirname "$0")"
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install -q "torch==2.13.0" || "$PY" -m pip install -q "torch>=2.6"
fi
"$PY" -m pip install -q -e ".[test]"
