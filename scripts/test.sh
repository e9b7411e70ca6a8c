#!/usr/bin/env bash
# Install everything a fresh machine needs, then run the linter and the whole test
# suite: fast unit tests and the integration tests (marked `integration`) that
# start real parts (an S3 endpoint, Slurm, an MLflow server, multi-process jobs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/system-deps.sh
.venv/bin/ruff check frugalcv tests benchmarks
# The suite needs a few GB of scratch space under the temp folder.
TMP_ROOT=${TMPDIR:-/tmp}
free_kb=$(df -Pk "$TMP_ROOT" | awk 'NR==2 {print $4}')
echo "[test] $((free_kb / 1024)) MiB free under $TMP_ROOT"
if [ "${free_kb:-0}" -lt 2097152 ]; then
    echo "[test] warning: less than 2 GiB free under $TMP_ROOT; tests that write shards may fail with no space left on the device" >&2
fi
exec .venv/bin/python -m pytest tests -m "not acceptance" "$@"
