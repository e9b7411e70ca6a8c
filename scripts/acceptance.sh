#!/usr/bin/env bash
# Full demo-metric runs, kept out of scripts/test.sh for time: every method's shipped demo (BlockDrop's
# digits, DCAN's street scenes, AdaFrame's and LiteEval's digit videos, SCN's shapes and digit scenes),
# unchanged, end to end, each checked against its targets (about 25 minutes in all on 2 quiet CPU cores).
# Prints the measured figures.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest tests -m acceptance -s "$@"
