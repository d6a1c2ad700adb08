#!/usr/bin/env bash
# Lint, then run the test suite with the venv's python. Extra arguments go to pytest, e.g.
#   bash ci/test.sh tests/envs -k bamdp
# Slow learning checks are deselected by pyproject's addopts (`-m 'not slow'`); `make test-slow`
# runs them.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Headless, offline: no display for matplotlib, no network for W&B.
export MPLBACKEND=Agg
export WANDB_MODE=offline
export WANDB_SILENT=true

bash ci/lint.sh
"${VENV:-.venv}/bin/python" -m pytest -q -p no:cacheprovider "$@"
