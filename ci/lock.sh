#!/usr/bin/env bash
# Refresh constraints.txt, the exact versions `make demo` / `make test` install (`pip install -c`).
#
# It builds a throw-away venv from pyproject.toml *without* the old constraints, so the lock
# holds what pip resolves today, then freezes it. Re-run the demo spread and the test suite
# after refreshing (README, "Reproducibility"): the README's numbers belong to the versions
# locked here.
#   bash ci/lock.sh            # writes constraints.txt
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"   # the CPU wheel the build machines carry (see ci/setup.sh)
tmp="$(mktemp -d)"
# pip builds a non-editable install in ./build: remove it with the throw-away venv.
trap 'rm -rf "$tmp" build' EXIT

"$PYTHON" -m venv "$tmp/venv"
VPY="$tmp/venv/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VPY" -m pip install --quiet --upgrade pip
"$VPY" -m pip install --quiet "torch==$TORCH_VERSION"
"$VPY" -m pip install --quiet ".[dev,distributed]"
{
    echo "# Exact versions of every package the README's numbers were measured with."
    echo "# Used by ci/setup.sh (pip install -c constraints.txt); refresh with: bash ci/lock.sh"
    echo "# Locked on $(date -u +%Y-%m-%d) with $("$VPY" --version 2>&1) on $(uname -sm)."
    # --all: pip and setuptools too. A local version label (+cpu) is dropped: == without one
    # matches any build of the release.
    "$VPY" -m pip freeze --all --exclude-editable --exclude torchrl_bamdp | sed -E 's/\+[A-Za-z0-9.]+$//' \
        | LC_ALL=C sort -f
} > constraints.txt
echo "[lock] wrote constraints.txt ($(grep -vc '^#' constraints.txt) packages)"
