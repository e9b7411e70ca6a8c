#!/usr/bin/env bash
# Install everything a fresh machine needs, then run the linter and the whole test
# suite: fast unit tests and the integration tests (marked `integration`) that
# start real parts (an S3 endpoint, Slurm, an MLflow server, multi-process jobs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/system-deps.sh
.venv/bin/ruff check frugalcv tests benchmarks
exec .venv/bin/python -m pytest tests -m "not acceptance" "$@"
