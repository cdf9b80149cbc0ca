#!/usr/bin/env bash
# Installs what the tests and benchmarks need on a fresh Debian machine, only when missing.
# auditd: ausearch (reference decoder in tests) and auditd (benchmark peer); staticcheck (lint);
# versitygw: S3 gateway with Object Lock, the peer of store/s3lock's tests (internal/peers);
# qemu-system-x86 and a Debian cloud kernel unpacked into $VM_CACHE (not installed): internal/vmtest;
# python3-aiosmtpd: the SMTP hub alert/mail's tests deliver to (run by Debian's /usr/bin/python3);
# clang, llvm (llvm-strip), libbpf-dev (bpf_helpers.h) and bpftool (vmlinux.h): make generate, policy's tests;
# lintian and mmdebstrap: the package's tests; prometheus: promtool, which lints the metrics endpoints'
# names and help texts (cmd/auditarch TestMetrics).
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
# rsyslog with gnutls and relp: the syslog-over-TLS and RELP peer of forward's sink tests (internal/peers).
[ -x /usr/sbin/rsyslogd ] || need+=(rsyslog)
ls /usr/lib/*/rsyslog/lmnsd_gtls.so >/dev/null 2>&1 || need+=(rsyslog-gnutls)
ls /usr/lib/*/rsyslog/imrelp.so >/dev/null 2>&1 || need+=(rsyslog-relp)
command -v ausearch >/dev/null 2>&1 || need+=(auditd)
command -v auditctl >/dev/null 2>&1 || need+=(auditd)
[ -x /sbin/audisp-remote ] || need+=(audispd-plugins) # bench/cmd/shipbench: auditd's remote-logging plugin
/usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1 || need+=(python3-aiosmtpd)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v clang >/dev/null 2>&1 || need+=(clang)
command -v llvm-strip >/dev/null 2>&1 || need+=(llvm)
[ -e /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
command -v bpftool >/dev/null 2>&1 || [ -x /usr/sbin/bpftool ] || need+=(bpftool)
# make deb's checks (packaging/deb_test.go): lintian, and mmdebstrap for the install test's Debian root.
command -v lintian >/dev/null 2>&1 || need+=(lintian)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
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

# internal/vmtest boots a Debian cloud kernel under qemu (TCG; never KVM, which hangs here). The kernel is
# unpacked into a cache, never installed: /boot and grub stay untouched. Pinned: 6.1.0-50 is the ABI of
# bookworm's point release (also in bookworm-security), the one vmtest's timings were measured with; a pin
# keeps a kernel change a reviewed commit. Debian drops superseded ABIs from the archive, so when the pinned one is no longer served the
# one the linux-image-cloud-amd64 meta-package depends on (the newest 6.1 cloud kernel) is taken instead.
# The first kernel unpacked stays until $VM_CACHE is removed.
VM_KERNEL_PKG=${VM_KERNEL_PKG:-linux-image-6.1.0-50-cloud-amd64}
VM_CACHE=${VM_CACHE:-/var/cache/auditarch/vm}
vm_kernel() {
  if [ -e "$VM_CACHE/vmlinuz" ]; then return; fi
  if [ "$(id -u)" != 0 ]; then
    echo "deps: need root to unpack a VM kernel into $VM_CACHE" >&2
    return
  fi
  local pkg=$VM_KERNEL_PKG tmp deb cfg missing=()
  if [ -z "$(apt-cache show "$pkg" 2>/dev/null)" ]; then apt-get update -qq; fi
  if [ -z "$(apt-cache show "$pkg" 2>/dev/null)" ]; then
    pkg=$(apt-cache depends linux-image-cloud-amd64 | sed -n 's/^ *Depends: \(linux-image-[^ ]*-cloud-amd64\)$/\1/p' | head -n1)
    echo "deps: $VM_KERNEL_PKG is no longer served; using $pkg" >&2
  fi
  tmp=$(mktemp -d)
  # Downloads as root into a private directory: the _apt sandbox user could not write there.
  (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >/dev/null)
  deb=$(ls "$tmp"/*.deb)
  mkdir -p "$VM_CACHE/$pkg"
  dpkg-deb -x "$deb" "$VM_CACHE/$pkg"
  rm -rf "$tmp" "$VM_CACHE/$pkg/lib" # the modules (91 MB): the guest loads none
  # The guest loads no modules: everything vmtest relies on must be built in.
  cfg=$(ls "$VM_CACHE/$pkg"/boot/config-*)
  for opt in AUDIT AUDITSYSCALL BPF_SYSCALL BPF_LSM CGROUP_BPF DEBUG_INFO_BTF CGROUPS DEVTMPFS BLK_DEV_INITRD \
    SERIAL_8250_CONSOLE TMPFS SECURITYFS SECURITY_LANDLOCK SECURITY_YAMA ACPI; do
    grep -qx "CONFIG_$opt=y" "$cfg" || missing+=("$opt")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: $pkg lacks built-in ${missing[*]}; not using it" >&2
    exit 1
  fi
  ln -sfn "$pkg/$(cd "$VM_CACHE/$pkg" && ls boot/vmlinuz-*)" "$VM_CACHE/vmlinuz"
  echo "deps: VM kernel $pkg unpacked into $VM_CACHE" >&2
}
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "deps: need root to apt-get install qemu-system-x86" >&2
  else
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
  fi
fi
vm_kernel
