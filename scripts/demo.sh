#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, then run the demo on an embedded
# default (local folder ./frugalcv-runs, no cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/frugalcv shard digits sklearn frugalcv-runs/data/digits --max-shard-samples 500
.venv/bin/frugalcv shards verify frugalcv-runs/data/digits/train
.venv/bin/frugalcv shards info frugalcv-runs/data/digits/train
