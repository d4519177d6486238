#!/usr/bin/env bash
# The test command: set up the environment, make sure Redis answers, run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -f .ci/install-browser.sh ]; then
  bash .ci/install-browser.sh
fi
if [ -f .ci/check-compose.sh ]; then
  bash .ci/check-compose.sh
fi
bash scripts/ensure-redis.sh
. .venv/bin/activate
python -m mypy   # the packages are typed; keep them clean (config in pyproject.toml)
exec python -m pytest "$@"
