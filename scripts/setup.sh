#!/usr/bin/env bash
# Set up a fresh machine for frugalcv: a virtual environment in .venv with the
# package, its test tools and DeepSpeed (pure-Python build, ops compiled on first use).
# Safe to rerun: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPIP=(.venv/bin/python -m pip --disable-pip-version-check -q)

if ! .venv/bin/python -c "import frugalcv, torch, torchvision, webdataset, mlflow, submitit, s3fs, png, pytest, moto, playwright" 2>/dev/null; then
    echo "[setup] installing frugalcv and its dependencies into .venv (first time: a few minutes)"
    "${VPIP[@]}" install --upgrade pip setuptools wheel
    # torch/torchvision: the releases kept on this machine kind's disk install in about a
    # minute; elsewhere the pyproject ranges pick what the index has.
    if [ "$(uname -m)" = x86_64 ]; then
        "${VPIP[@]}" install "torch==2.14.1" "torchvision==0.29.1" || echo "[setup] torch 2.14.1 not available here; using the pyproject ranges"
    fi
    "${VPIP[@]}" install -e ".[dev]"
fi
if ! .venv/bin/python -c "import deepspeed" 2>/dev/null; then
    echo "[setup] installing DeepSpeed (pure-Python build)"
    DS_BUILD_OPS=0 "${VPIP[@]}" install --no-build-isolation "deepspeed>=0.14"
fi
.venv/bin/python -c "import frugalcv, torch; print(f'[setup] frugalcv {frugalcv.__version__}, torch {torch.__version__}')"
