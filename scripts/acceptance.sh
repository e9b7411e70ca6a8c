#!/usr/bin/env bash
# Full demo-metric runs, kept out of scripts/test.sh for time: the shipped digits demo, unchanged,
# end to end, checked against its accuracy / blocks / heuristic-baseline targets (about 5-10 minutes
# on 2 CPU cores). Prints the measured figures.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest tests -m acceptance -s "$@"
