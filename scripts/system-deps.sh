#!/usr/bin/env bash
# System packages the integration tests need (only as root; otherwise says what is missing).
set -euo pipefail
need=()
command -v g++ >/dev/null || need+=(g++)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
    else
        echo "[system-deps] missing: ${need[*]} (install them as root)" >&2
    fi
fi
