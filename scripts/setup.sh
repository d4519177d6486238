#!/usr/bin/env bash
# Create .venv and install the project: the CPU build of torch first (pinned: an open
# range would pull a multi-GB CUDA build), then caption-verifier with its dev extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
python -m pip install -q "torch==2.13.0" 2>&1 | grep -v '^WARNING: Location' || true
python -m pip install -q -e ".[dev]" 2>&1 | grep -v '^WARNING: Location' || true
python -c "import torch, transformers, celery; print(f'torch {torch.__version__}, transformers {transformers.__version__}, celery {celery.__version__}')"
