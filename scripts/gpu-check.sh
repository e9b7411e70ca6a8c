#!/usr/bin/env bash
# The GPU check, for a machine with one or more NVIDIA GPUs (about 10 minutes on one):
# every method's demo on CUDA (parameters and batches on the GPU), a 2-rank NCCL DDP stage with two
# or more GPUs, resume after SIGTERM equal to an uninterrupted run, and speed as JSON lines
# (gpu_overhead_ratio; benchmarks/blockdrop_inference.py --device cuda).
# Without a GPU it says "not run: no GPU" and exits 2; --allow-cpu runs it tiny on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/gpu_check.py "$@"
