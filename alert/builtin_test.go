package alert

import (
	"testing"

	"github.com/auditarch/auditarch/archive"
)

// builtinCases are one event per built-in rule, and routine events for the ignore lists. Records are
// built byte for byte in the kernel's format (field order of audit_log_exit and the record loggers of
// the running kernel, as in testdata/workload.cap); the daemon's own leaves as the writer writes them.
var builtinCases = []struct {
	name  string
	item  Item
	class Class  // at the server level
	rule  string // the file that decides ("" for unusual)
}{
	// attacks
	{"policy leaf", Item{Leaf: controlLeaf(archive.LeafPolicy, `{"action":"signal","verdict":"frozen","sender":{"pid":9001,"uid":0,"euid":0,"auid":1000,"ses":7,"comm":"kill"},"target":{"pid":8000,"uid":0,"euid":0,"auid":4294967295,"ses":4294967295,"comm":"auditarch"}}`)}, Attack, "cracking.d/auditarch"},
	{"kill of auditarch", Item{Leaf: eventLeaf(1, syscallRec(62, true, 0, [4]string{"1f40", "9", "0", "0"}, 0, 0, 1000, "bash", "/usr/bin/bash", "signal"), objPIDRec(8000, "auditarch"), proctitleRec("bash"))}, Attack, "cracking.d/auditarch"},
	{"tgkill of auditarch", Item{Leaf: eventLeaf(2, syscallRec(234, true, 0, [4]string{"1f40", "1f41", "f", "0"}, 0, 0, 1000, "python3", "/usr/bin/python3.11", "signal"), objPIDRec(8001, "auditarch"), proctitleRec("python3"))}, Attack, "cracking.d/auditarch"},
	{"ptrace of auditarch", Item{Leaf: eventLeaf(3, syscallRec(101, true, 0, [4]string{"4206", "1f40", "0", "0"}, 0, 0, 1000, "gdb", "/usr/bin/gdb", "ptrace"), objPIDRec(8000, "auditarch"), proctitleRec("gdb"))}, Attack, "cracking.d/auditarch"},
	{"rule removed", Item{Leaf: eventLeaf(4, rec{1305, `auid=1000 ses=3 op=remove_rule key="exec" list=4 res=1`})}, Attack, "cracking.d/auditarch"},
	{"auditing disabled", Item{Leaf: eventLeaf(5, rec{1305, `op=set audit_enabled=0 old=1 auid=1000 ses=3 res=1`})}, Attack, "cracking.d/auditarch"},
	{"audit pid taken over", Item{Leaf: eventLeaf(6, rec{1305, `op=set audit_pid=9100 old=8000 auid=1000 ses=3 res=1`})}, Attack, "cracking.d/auditarch"},
	{"finit_module", Item{Leaf: eventLeaf(7, syscallRec(313, false, -38, [4]string{"3", "4b9f2a", "0", "0"}, 0, 0, 1000, "modprobe", "/usr/bin/kmod", "module"), proctitleRec("modprobe evil"))}, Attack, "cracking.d/auditarch"},
	{"init_module", Item{Leaf: eventLeaf(8, syscallRec(175, true, 0, [4]string{"7f0000", "c", "4b9f2a", "0"}, 0, 0, 1000, "insmod", "/usr/bin/kmod", "module"), proctitleRec("insmod rk.ko"))}, Attack, "cracking.d/auditarch"},
	{"bpf prog load", Item{Leaf: eventLeaf(9, syscallRec(321, true, 3, [4]string{"5", "c000123", "90", "0"}, 0, 0, 1000, "bpftool", "/usr/sbin/bpftool", "bpf"), rec{1334, "prog-id=42 op=LOAD"}, proctitleRec("bpftool prog load"))}, Attack, "cracking.d/auditarch"},
	{"exec from /tmp", Item{Leaf: eventLeaf(10, syscallRec(59, true, 0, [4]string{"1", "2", "3", "0"}, 2, 0, 1000, "x", "/tmp/x", "exec"), execveRec("/tmp/x"), cwdRec("/root"), pathRec(0, "/tmp/x", "NORMAL"), pathRec(1, "/lib64/ld-linux-x86-64.so.2", "NORMAL"), proctitleRec("/tmp/x"))}, Attack, "cracking.d/auditarch"},
	{"exec from /dev/shm", Item{Leaf: eventLeaf(11, syscallRec(59, true, 0, [4]string{"1", "2", "3", "0"}, 2, 0, 1000, "y", "/dev/shm/y", "exec"), execveRec("/dev/shm/y"), cwdRec("/root"), pathRec(0, "/dev/shm/y", "NORMAL"), pathRec(1, "/lib64/ld-linux-x86-64.so.2", "NORMAL"), proctitleRec("/dev/shm/y"))}, Attack, "cracking.d/auditarch"},
	{"deleted executable", Item{Leaf: eventLeaf(12, syscallRec(231, true, 0, [4]string{"0", "0", "0", "0"}, 0, 0, 1000, "payload", "/memfd:payload (deleted)", "proc"))}, Attack, "cracking.d/auditarch"},
	{"store fork alarm", Item{Alarm: &Alarm{Source: "store", Kind: "fork", Host: "bastion1", Message: "refused bytes 0..10 of x that differ"}}, Attack, "cracking.d/auditarch"},
	{"store tampered alarm", Item{Alarm: &Alarm{Source: "store", Kind: "tampered", Host: "bastion1", Message: "refused bytes that do not verify"}}, Attack, "cracking.d/auditarch"},
	{"store silence alarm", Item{Alarm: &Alarm{Source: "store", Kind: "silence", Host: "bastion1", Message: "host has sent nothing"}}, Attack, "cracking.d/auditarch"},
	{"store canary alarm", Item{Alarm: &Alarm{Source: "store", Kind: "write-once", Message: "the object store's canary check failed"}}, Attack, "cracking.d/auditarch"},
	{"daemon: store key mismatch", Item{Alarm: &Alarm{Source: "daemon", Kind: "store_key", Message: "store certificate: not the pinned store key"}}, Attack, "cracking.d/auditarch"},
	{"daemon: shedding", Item{Alarm: &Alarm{Source: "daemon", Kind: "ship_backlog", Message: "1073741824 bytes not shipped"}}, Attack, "cracking.d/auditarch"},
	{"LOST leaf", Item{Leaf: func() *archive.Leaf {
		l := &archive.Leaf{Kind: archive.LeafLost}
		l.Event.Kind, l.Event.Lost.Reason, l.Event.Lost.Count = 2, 1, 404
		return l
	}()}, Attack, "cracking.d/auditarch"},
	{"crashed run", Item{Leaf: controlLeaf(archive.LeafStart, `{"version":"v1","origin":"h","pid":8000,"epoch":3,"recovered":{"segment":"s","unsigned":0}}`)}, Attack, "cracking.d/auditarch"},

	// violations
	{"daemon: shipping failing", Item{Alarm: &Alarm{Source: "daemon", Kind: "ship_failing", Message: "the store has not been reached for 1m0s"}}, Violation, "violations.d/auditarch"},
	{"store quota alarm", Item{Alarm: &Alarm{Source: "store", Kind: "quota", Host: "bastion1", Message: "the host's area is at a limit"}}, Violation, "violations.d/auditarch"},
	{"su failure", Item{Leaf: eventLeaf(20, rec{1100, `pid=9200 uid=65534 auid=1000 ses=3 subj=unconfined msg='op=PAM:authentication grantors=? acct="root" exe="/usr/bin/su" hostname=? addr=? terminal=/dev/pts/1 res=failed'`})}, Violation, "violations.d/auditarch"},
	{"sudo refused", Item{Leaf: eventLeaf(21, rec{1123, `pid=9201 uid=1000 auid=1000 ses=3 subj=unconfined msg='cwd="/home/op" cmd=2F62696E2F7368 exe="/usr/bin/sudo" terminal=pts/1 res=failed'`})}, Violation, "violations.d/auditarch"},
	{"account refused", Item{Leaf: eventLeaf(22, rec{1101, `pid=9202 uid=0 auid=4294967295 ses=4294967295 subj=unconfined msg='op=PAM:accounting grantors=? acct="op" exe="/usr/sbin/sshd" hostname=10.0.0.9 addr=10.0.0.9 terminal=ssh res=failed'`})}, Violation, "violations.d/auditarch"},
	{"setuid", Item{Leaf: eventLeaf(23, syscallRec(105, true, 0, [4]string{"0", "0", "0", "0"}, 0, 1000, 1000, "exploit", "/home/op/exploit", "identity"), proctitleRec("./exploit"))}, Violation, "violations.d/auditarch"},
	{"setresgid", Item{Leaf: eventLeaf(24, syscallRec(119, true, 0, [4]string{"0", "0", "0", "0"}, 0, 0, 1000, "setpriv", "/usr/bin/setpriv", "identity"), proctitleRec("setpriv"))}, Violation, "violations.d/auditarch"},
	{"passwd written", Item{Leaf: eventLeaf(25, syscallRec(257, true, 3, [4]string{"ffffff9c", "55d0", "441", "1b6"}, 1, 0, 1000, "bash", "/usr/bin/bash", "file_write"), cwdRec("/root"), pathRec(0, "/etc/passwd", "NORMAL"), proctitleRec("bash"))}, Violation, "violations.d/auditarch"},
	{"shadow written", Item{Leaf: eventLeaf(26, syscallRec(257, true, 3, [4]string{"ffffff9c", "55d0", "441", "1b6"}, 1, 0, 1000, "vi", "/usr/bin/vi", "file_write"), cwdRec("/root"), pathRec(0, "/etc/shadow", "NORMAL"), proctitleRec("vi"))}, Violation, "violations.d/auditarch"},
	{"sudoers.d created", Item{Leaf: eventLeaf(27, syscallRec(257, true, 3, [4]string{"ffffff9c", "55d0", "241", "1b6"}, 2, 0, 1000, "tee", "/usr/bin/tee", "file_write"), cwdRec("/root"), pathRec(0, "/etc/sudoers.d/", "PARENT"), pathRec(1, "/etc/sudoers.d/op", "CREATE"), proctitleRec("tee"))}, Violation, "violations.d/auditarch"},
	{"sshd_config written", Item{Leaf: eventLeaf(28, syscallRec(257, true, 3, [4]string{"ffffff9c", "55d0", "441", "1b6"}, 1, 0, 1000, "bash", "/usr/bin/bash", "file_write"), cwdRec("/root"), pathRec(0, "/etc/ssh/sshd_config", "NORMAL"), proctitleRec("bash"))}, Violation, "violations.d/auditarch"},
	{"ld.so.preload created", Item{Leaf: eventLeaf(29, syscallRec(257, true, 3, [4]string{"ffffff9c", "55d0", "241", "1b6"}, 2, 0, 1000, "bash", "/usr/bin/bash", "file_write"), cwdRec("/root"), pathRec(0, "/etc/", "PARENT"), pathRec(1, "/etc/ld.so.preload", "CREATE"), proctitleRec("bash"))}, Violation, "violations.d/auditarch"},
	{"cron.d created", Item{Leaf: eventLeaf(30, syscallRec(257, true, 3, [4]string{"ffffff9c", "55d0", "241", "1b6"}, 2, 0, 1000, "bash", "/usr/bin/bash", "file_write"), cwdRec("/root"), pathRec(0, "/etc/cron.d/", "PARENT"), pathRec(1, "/etc/cron.d/job", "CREATE"), proctitleRec("bash"))}, Violation, "violations.d/auditarch"},
	{"systemd unit created", Item{Leaf: eventLeaf(31, syscallRec(257, true, 3, [4]string{"ffffff9c", "55d0", "241", "1b6"}, 2, 0, 1000, "bash", "/usr/bin/bash", "file_write"), cwdRec("/root"), pathRec(0, "/etc/systemd/system/", "PARENT"), pathRec(1, "/etc/systemd/system/x.service", "CREATE"), proctitleRec("bash"))}, Violation, "violations.d/auditarch"},
	{"chattr", Item{Leaf: eventLeaf(32, syscallRec(59, true, 0, [4]string{"1", "2", "3", "0"}, 2, 0, 1000, "chattr", "/usr/bin/chattr", "exec"), execveRec("chattr", "-i", "/etc/passwd"), cwdRec("/root"), pathRec(0, "/usr/bin/chattr", "NORMAL"), pathRec(1, "/lib64/ld-linux-x86-64.so.2", "NORMAL"), proctitleRec("chattr -i /etc/passwd"))}, Violation, "violations.d/auditarch"},
	{"log removed", Item{Leaf: eventLeaf(33, syscallRec(263, true, 0, [4]string{"ffffff9c", "55d0", "0", "0"}, 2, 0, 1000, "rm", "/usr/bin/rm", "delete"), cwdRec("/root"), pathRec(0, "/var/log/", "PARENT"), pathRec(1, "/var/log/auth.log", "DELETE"), proctitleRec("rm /var/log/auth.log"))}, Violation, "violations.d/auditarch"},
	{"history removed", Item{Leaf: eventLeaf(34, syscallRec(263, true, 0, [4]string{"ffffff9c", "55d0", "0", "0"}, 2, 1000, 1000, "rm", "/usr/bin/rm", "delete"), cwdRec("/home/op"), pathRec(0, "/home/op/", "PARENT"), pathRec(1, "/home/op/.bash_history", "DELETE"), proctitleRec("rm .bash_history"))}, Violation, "violations.d/auditarch"},

	// unusual: nothing ignores them
	{"listen", Item{Leaf: eventLeaf(40, syscallRec(50, true, 0, [4]string{"3", "1000", "0", "0"}, 0, 0, 1000, "nc", "/usr/bin/nc.openbsd", "listen"), proctitleRec("nc -l 4444"))}, Unusual, ""},
	{"accept", Item{Leaf: eventLeaf(41, syscallRec(288, true, 4, [4]string{"3", "7ffd", "7ffc", "80800"}, 0, 0, 1000, "nc", "/usr/bin/nc.openbsd", "net"), rec{1306, "saddr=020011B40A000009000000000000000000"}, proctitleRec("nc -l 4444"))}, Unusual, ""},
	{"mount", Item{Leaf: eventLeaf(42, syscallRec(165, true, 0, [4]string{"55d0", "55d1", "55d2", "0"}, 1, 0, 1000, "mount", "/usr/bin/mount", "mount"), cwdRec("/root"), pathRec(0, "/mnt", "NORMAL"), proctitleRec("mount -t tmpfs x /mnt"))}, Unusual, ""},
	{"clock_settime", Item{Leaf: eventLeaf(43, syscallRec(227, true, 0, [4]string{"0", "7ffd", "0", "0"}, 0, 0, 1000, "date", "/usr/bin/date", "clock"), proctitleRec("date -s 12:00"))}, Unusual, ""},
	{"clock leaf", Item{Leaf: controlLeaf(archive.LeafClock, `{"step_ns":-3600000000000}`)}, Unusual, ""},

	// held back or routine
	{"auditarch loads its bpf", Item{Leaf: eventLeaf(50, syscallRec(321, true, 3, [4]string{"5", "c000123", "90", "0"}, 0, 0, 4294967295, "auditarch", "/usr/sbin/auditarch", "bpf"), proctitleRec("auditarch run"))}, Ignored, "cracking.ignore.d/auditarch"},
	{"passwd changes its file", Item{Leaf: eventLeaf(51, syscallRec(257, true, 3, [4]string{"ffffff9c", "55d0", "241", "1b6"}, 2, 0, 1000, "passwd", "/usr/bin/passwd", "file_write"), cwdRec("/root"), pathRec(0, "/etc/", "PARENT"), pathRec(1, "/etc/shadow", "NORMAL"), proctitleRec("passwd"))}, Ignored, "violations.ignore.d/auditarch"},
	{"su succeeds", Item{Leaf: eventLeaf(52, rec{1100, `pid=9200 uid=0 auid=1000 ses=3 subj=unconfined msg='op=PAM:authentication grantors=pam_rootok acct="nobody" exe="/usr/bin/su" hostname=? addr=? terminal=/dev/pts/1 res=success'`})}, Ignored, "ignore.d.server/auditarch"},
	{"fork", Item{Leaf: eventLeaf(53, syscallRec(56, true, 9300, [4]string{"1200011", "0", "0", "7f00"}, 0, 0, 1000, "bash", "/usr/bin/bash", "proc"))}, Ignored, "ignore.d.paranoid/auditarch"},
	{"daemon start", Item{Leaf: controlLeaf(archive.LeafStart, `{"version":"v1","origin":"h","pid":8000,"epoch":3}`)}, Ignored, "ignore.d.paranoid/auditarch"},
	{"daemon registers", Item{Leaf: eventLeaf(54, rec{1305, `op=set audit_pid=8000 old=0 auid=4294967295 ses=4294967295 res=1`})}, Ignored, "ignore.d.paranoid/auditarch"},
	{"connect", Item{Leaf: eventLeaf(55, syscallRec(42, true, 0, [4]string{"3", "7ffd", "10", "0"}, 0, 1000, 1000, "ssh", "/usr/bin/ssh", "net"), rec{1306, "saddr=02000016C0A80001000000000000000000"}, proctitleRec("ssh host"))}, Ignored, "ignore.d.server/auditarch"},
	{"exec of a program", Item{Leaf: eventLeaf(56, syscallRec(59, true, 0, [4]string{"1", "2", "3", "0"}, 2, 1000, 1000, "ls", "/usr/bin/ls", "exec"), execveRec("ls"), cwdRec("/home/op"), pathRec(0, "/usr/bin/ls", "NORMAL"), pathRec(1, "/lib64/ld-linux-x86-64.so.2", "NORMAL"), proctitleRec("ls"))}, Unusual, ""},
}

// TestBuiltinRules is the golden test of the built-in rule set: every rule's event gets its class
// and names the file that decided.
func TestBuiltinRules(t *testing.T) {
	c := loadBuiltin(t, Server, "")
	for _, tc := range builtinCases {
		m := c.Classify(tc.item)
		if m.Class != tc.class || m.Rule != tc.rule {
			t.Errorf("%s: got %s (%q), want %s (%q)\n  line: %s", tc.name, m.Class, m.Rule, tc.class, tc.rule, m.Line)
		}
	}
}

// TestBuiltinLevels: the ignore lists are cumulative: what the server level ignores the paranoid level
// reports, and the workstation level ignores more.
func TestBuiltinLevels(t *testing.T) {
	find := func(name string) Item {
		for _, tc := range builtinCases {
			if tc.name == name {
				return tc.item
			}
		}
		t.Fatalf("no case %q", name)
		return Item{}
	}
	for _, tt := range []struct {
		name  string
		level Level
		want  Class
	}{
		{"connect", Paranoid, Unusual}, {"connect", Server, Ignored}, {"connect", Workstation, Ignored},
		{"exec of a program", Server, Unusual}, {"exec of a program", Workstation, Ignored},
		{"fork", Paranoid, Ignored},
		{"exec from /tmp", Workstation, Attack}, // ignore lists never hide attacks
		{"passwd written", Workstation, Violation},
	} {
		if got := loadBuiltin(t, tt.level, "").Classify(find(tt.name)).Class; got != tt.want {
			t.Errorf("%s at %s: got %s, want %s", tt.name, tt.level, got, tt.want)
		}
	}
}
