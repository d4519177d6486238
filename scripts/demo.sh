#!/usr/bin/env bash
# The main job for a newcomer: set up, then run the demo (it starts what it needs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec verifier demo "$@"
