#!/usr/bin/env bash
# System packages the integration tests need (only as root; otherwise says what is missing).
# Slurm 22.05 (slurmctld, slurmd, clients) + munge: the tests start a real single-host
# cluster with `frugalcv cluster up` (see frugalcv/slurm/cluster.py). Chromium: the browser test
# opens a demo run in the MLflow UI.
set -euo pipefail
need=()
command -v g++ >/dev/null || need+=(g++)
command -v ninja >/dev/null || need+=(ninja-build)  # DeepSpeed compiles its CPU comm op on first use
command -v slurmctld >/dev/null || need+=(slurmctld)
command -v slurmd >/dev/null || need+=(slurmd)
command -v sbatch >/dev/null || need+=(slurm-client)
command -v munged >/dev/null || need+=(munge)
# headless Chromium for the MLflow UI browser test (tests/integration/test_mlflow_browser.py)
[ -x /usr/bin/chromium ] || need+=(chromium fonts-dejavu-core)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
    else
        echo "[system-deps] missing: ${need[*]} (install them as root: apt-get install -y --no-install-recommends ${need[*]})" >&2
    fi
fi
