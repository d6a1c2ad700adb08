#!/usr/bin/env bash
# Lint and format check with the venv's ruff (configuration in pyproject.toml).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUFF="${VENV:-.venv}/bin/ruff"

"$RUFF" check .
"$RUFF" format --check .
