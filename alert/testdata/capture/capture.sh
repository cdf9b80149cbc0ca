#!/usr/bin/env bash
# Records the events behind alert/testdata/events.jsonl: runs the real auditarch daemon (with
# --protect detect) on the real kernel, does each thing a built-in rule is about with the real command
# (or helper.go for the system calls no command makes), stops the daemon and keeps `show --json`.
# Run as root from the repository root, holding the kernel test lock (internal/kernlock):
#   flock /run/lock/auditarch-kernel-test.lock bash alert/testdata/capture/capture.sh
# It changes the host only transiently: files it creates it removes, the clock is set to what it reads.
set -euo pipefail
repo=$PWD
work=$(mktemp -d /tmp/alertcap.XXXXXX)
go build -o "$work/auditarch" ./cmd/auditarch
go build -o "$work/helper" ./alert/testdata/capture/helper.go
"$work/auditarch" rules > "$work/rules"
cat >> "$work/rules" <<'RULES'
-a always,exit -F arch=b64 -S bind,listen -F key=listen
-a always,exit -F arch=b64 -S settimeofday,clock_settime,adjtimex -F key=clock
RULES
"$work/auditarch" run --archive "$work/archive" --key "$work/host.key" --rules "$work/rules" \
  --protect detect --store-dir "$work/store" 2> "$work/daemon.log" &
daemon=$!
for i in $(seq 100); do grep -q 'captur' "$work/daemon.log" 2>/dev/null && break; sleep 0.1; done
sleep 1
h=$work/helper
mark() { "$work/auditarch" rules >/dev/null; }  # a harmless exec between steps

# attacks
setsid bash -c "kill -CONT $daemon" || true        # a signal to the daemon (frozen and recorded)
setsid "$h" ptrace "$daemon" || true                # ptrace of the daemon
"$h" finit || true; "$h" initmod || true            # kernel module loads (refused: not modules)
"$h" bpf || true                                    # a bpf program load
cp /bin/true /tmp/alertcap-x && /tmp/alertcap-x; rm -f /tmp/alertcap-x
mkdir -p /dev/shm && cp /bin/true /dev/shm/alertcap-y && /dev/shm/alertcap-y; rm -f /dev/shm/alertcap-y
"$h" memfdexec || true                              # exec of a deleted (memfd) file
auditctl -a always,exit -F arch=b64 -S chroot -k alertcap 2>/dev/null || true
auditctl -d always,exit -F arch=b64 -S chroot -k alertcap 2>/dev/null || true  # a rule removed
sleep 1.5                                           # the daemon puts its rules back

# violations
printf 'wrong\n' | runuser -u nobody -- script -qec "su root -c true" /dev/null || true  # failed su
setpriv --reuid=65534 --regid=65534 --clear-groups true || true                        # setuid/setgid
: >> /etc/passwd; : >> /etc/shadow; : >> /etc/ssh/sshd_config 2>/dev/null || true
mkdir -p /etc/sudoers.d && : > /etc/sudoers.d/alertcap && rm -f /etc/sudoers.d/alertcap
[ -e /etc/ld.so.preload ] || { : > /etc/ld.so.preload; rm -f /etc/ld.so.preload; }
mkdir -p /etc/cron.d && : > /etc/cron.d/alertcap && rm -f /etc/cron.d/alertcap
mkdir -p /etc/systemd/system && : > /etc/systemd/system/alertcap.service && rm -f /etc/systemd/system/alertcap.service
: > /tmp/alertcap-f && chattr +i /tmp/alertcap-f && chattr -i /tmp/alertcap-f; rm -f /tmp/alertcap-f
: > /var/log/alertcap.log && rm -f /var/log/alertcap.log
mkdir -p /tmp/alertcap-home && : > /tmp/alertcap-home/.bash_history && rm -f /tmp/alertcap-home/.bash_history

# unusual
"$h" listen
mkdir -p /tmp/alertcap-mnt && mount -t tmpfs alertcap /tmp/alertcap-mnt && umount /tmp/alertcap-mnt; rmdir /tmp/alertcap-mnt
"$h" settime

# routine
su nobody -s /bin/sh -c true || true
ls /etc > /dev/null; date > /tmp/alertcap-routine; rm -f /tmp/alertcap-routine
sleep 2
kill -INT "$daemon" || true; wait "$daemon" || true
"$work/auditarch" show --json "$work/archive" > "$repo/alert/testdata/events.jsonl"
{ echo "# uname: $(uname -a)"; echo "# recorded by alert/testdata/capture/capture.sh on $(date -u +%F)"; } > "$repo/alert/testdata/events.uname"
echo "$work"
