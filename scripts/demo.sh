#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, then run the BlockDrop demo pipeline on an
# embedded default (local folder ./frugalcv-runs, local MLflow store, inline, no cluster):
# shard digits -> pretrain -> curriculum -> finetune -> evaluate, then print the results.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/frugalcv run pipelines/blockdrop-demo.yaml "$@"
.venv/bin/frugalcv status latest
