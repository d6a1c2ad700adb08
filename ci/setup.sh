#!/usr/bin/env bash
# Create .venv (if missing) and install the package with its dev and distributed extras,
# idempotently.
#
# torch is installed first with an exact pin: `pip install torch==2.13.0` takes the CPU wheel
# available on the build machines, whereas letting the package's `torch>=...` requirement pull
# torch would download a multi-GB CUDA build. The editable install is redone only when
# pyproject.toml or constraints.txt changed since the last successful install (a hash kept in a
# stamp file inside .venv), so a repeated `make test` / `make demo` spends well under a second.
#
# constraints.txt pins every package (and pip itself) to the versions the README's numbers were
# measured with; `bash ci/lock.sh` refreshes it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
TORCH_VERSION="2.13.0"
STAMP="$VENV/.torchrl_bamdp-install.sha256"

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "[setup] creating $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi
VPY="$VENV/bin/python"

# Hash of what decides the install: pyproject.toml (dependencies, extras, entry points) and the
# pinned versions.
want="$("$VPY" -c 'import hashlib, sys; print(hashlib.sha256(b"".join(open(p, "rb").read() for p in sys.argv[1:])).hexdigest())' pyproject.toml constraints.txt)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [[ "$want" == "$have" ]]; then
    exit 0
fi

echo "[setup] installing (pyproject.toml or constraints.txt changed, or no install stamp)"
rm -f "$STAMP"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VPY" -m pip install --quiet -c constraints.txt --upgrade pip

torch_installed="$("$VPY" -c 'import importlib.metadata as m
try:
    print(m.version("torch"))
except m.PackageNotFoundError:
    print("")' 2>/dev/null || true)"
# A local-version suffix (2.13.0+cpu) counts as the pinned version.
if [[ "${torch_installed%%+*}" == "$TORCH_VERSION" ]]; then
    echo "[setup] torch $torch_installed already installed"
else
    echo "[setup] installing torch==$TORCH_VERSION"
    "$VPY" -m pip install --quiet -c constraints.txt "torch==$TORCH_VERSION"
fi

# The distributed extra (Ray) too: the test suite runs the train.collector=ray path.
"$VPY" -m pip install --quiet -c constraints.txt -e ".[dev,distributed]"
echo "$want" > "$STAMP"
echo "[setup] done: $("$VPY" -c 'import torch, torchrl; print(f"torch {torch.__version__}, torchrl {torchrl.__version__}")')"
