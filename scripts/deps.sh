#!/usr/bin/env bash
# Installs what the tests and benchmarks need on a fresh Debian machine, only when missing.
# auditd: ausearch (reference decoder in tests) and auditd (benchmark peer); staticcheck (lint);
# versitygw: S3 gateway with Object Lock, the peer of store/s3lock's tests (internal/peers).
set -euo pipefail

# versitygw builds from source: 1-4 minutes, about 80 MB. Pinned: its behaviour is recorded in FACTS.md.
VERSITYGW_VERSION=v1.8.0
gobin=$(go env GOBIN)
[ -n "$gobin" ] || gobin=$(go env GOPATH | cut -d: -f1)/bin
if ! command -v versitygw >/dev/null 2>&1 && [ ! -x "$gobin/versitygw" ]; then
  echo "deps: installing versitygw $VERSITYGW_VERSION into $gobin (takes a few minutes)" >&2
  (cd / && go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION")
fi

need=()
command -v ausearch >/dev/null 2>&1 || need+=(auditd)
command -v auditctl >/dev/null 2>&1 || need+=(auditd)
[ -x /sbin/audisp-remote ] || need+=(audispd-plugins) # bench/cmd/shipbench: auditd's remote-logging plugin
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
