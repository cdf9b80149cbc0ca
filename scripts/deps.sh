#!/usr/bin/env bash
# Installs what the tests and benchmarks need on a fresh Debian machine, only when missing.
# auditd: ausearch (reference decoder in tests) and auditd (benchmark peer); staticcheck (lint).
set -euo pipefail
need=()
command -v ausearch >/dev/null 2>&1 || need+=(auditd)
command -v auditctl >/dev/null 2>&1 || need+=(auditd)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "deps: need root to apt-get install ${need[*]}" >&2
    exit 0
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The package starts nothing here (no systemd), but make sure no auditd holds the kernel.
  pkill -x auditd 2>/dev/null || true
fi
