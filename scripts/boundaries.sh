#!/usr/bin/env bash
# Package boundaries that the linters do not know (STYLE.md): no "syscall" package (use x/sys/unix),
# no x/crypto/ed25519 (use crypto/ed25519), no global zerolog logger outside cmd/, no shelling out to
# auditctl outside tests, no capture or writer code in the store.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
src=$(git ls-files '*.go' | grep -v '_test.go$' || true)
check() { # pattern, files, message
  local hits
  hits=$(grep -nE "$1" $2 2>/dev/null || true)
  if [ -n "$hits" ]; then echo "$hits"; echo "boundary: $3" >&2; fail=1; fi
}
# bench/ tools start and time processes through os/exec and ForkExec, whose types live only in syscall.
check '^\s*"syscall"$' "$(echo "$src" | grep -v '^bench/' || true)" 'import golang.org/x/sys/unix, not syscall'
check 'golang.org/x/crypto/ed25519' "$src" 'use stdlib crypto/ed25519'
check 'github.com/rs/zerolog/log"' "$(echo "$src" | grep -v '^cmd/' || true)" 'pass a zerolog.Logger in; no global logger outside cmd/'
check 'exec\.Command\("auditctl' "$src" 'program the kernel over netlink, never by running auditctl'
# The store verifies and keeps what hosts send; it links neither the capture (go-libaudit, netlink) nor
# the writer (docs/format.md): one verifier, one format codec.
deps=$(go list -deps ./store/... | grep -E 'go-libaudit|/archive/writer$|/auditarch/audit$' || true)
if [ -n "$deps" ]; then echo "$deps"; echo "boundary: the store must not link the capture or the writer" >&2; fail=1; fi
exit $fail
