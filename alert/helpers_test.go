package alert

import (
	"fmt"
	"strings"
	"testing"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/audit/raw"
)

// rec is one kernel record: its netlink type and its body (without the audit(...) stamp).
type rec struct {
	typ  uint16
	body string
}

// eventLeaf builds the EVENT leaf of records that share serial, stamped as the kernel stamps them.
func eventLeaf(serial uint32, recs ...rec) *archive.Leaf {
	l := &archive.Leaf{Kind: archive.LeafEvent}
	ev := &l.Event
	// the kernel closes a syscall's event with an EOE; user and configuration records come alone
	ev.Kind, ev.Serial, ev.Sec, ev.Msec, ev.EOE = raw.KindEvent, serial, 1795324163, 213, len(recs) > 0 && recs[0].typ == 1300
	for _, r := range recs {
		ev.Add(r.typ, []byte(fmt.Sprintf("audit(%d.%03d:%d): %s", ev.Sec, ev.Msec, serial, r.body)))
	}
	l.Time = ev.Sec * 1e9
	return l
}

// syscallRec is a SYSCALL record body in the kernel's field order (audit_log_exit, x86_64).
func syscallRec(nr int, success bool, exit int64, args [4]string, items int, uid, auid uint32, comm, exe, key string) rec {
	s := "no"
	if success {
		s = "yes"
	}
	k := "(null)"
	if key != "" {
		k = `"` + key + `"`
	}
	return rec{1300, fmt.Sprintf("arch=c000003e syscall=%d success=%s exit=%d a0=%s a1=%s a2=%s a3=%s items=%d ppid=8932 pid=8945 "+
		"auid=%d uid=%d gid=%d euid=%d suid=%d fsuid=%d egid=%d sgid=%d fsgid=%d tty=pts0 ses=3 comm=%q exe=%q key=%s",
		nr, s, exit, args[0], args[1], args[2], args[3], items, auid, uid, uid, uid, uid, uid, uid, uid, uid, comm, exe, k)}
}

func pathRec(item int, name, nametype string) rec {
	return rec{1302, fmt.Sprintf("item=%d name=%q inode=9979386 dev=fe:00 mode=0100644 ouid=0 ogid=0 rdev=00:00 nametype=%s cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0", item, name, nametype)}
}

func cwdRec(dir string) rec { return rec{1307, fmt.Sprintf("cwd=%q", dir)} }

func execveRec(args ...string) rec {
	var b strings.Builder
	fmt.Fprintf(&b, "argc=%d", len(args))
	for i, a := range args {
		fmt.Fprintf(&b, " a%d=%q", i, a)
	}
	return rec{1309, b.String()}
}

func objPIDRec(pid int, comm string) rec {
	return rec{1318, fmt.Sprintf("opid=%d oauid=-1 ouid=0 oses=-1 ocomm=%q", pid, comm)}
}

func proctitleRec(s string) rec { return rec{1327, fmt.Sprintf("proctitle=%X", s)} }

// controlLeaf builds a control leaf with a JSON body.
func controlLeaf(kind archive.LeafKind, body string) *archive.Leaf {
	return &archive.Leaf{Kind: kind, Time: 1795324163e9, Body: []byte(body)}
}

func loadBuiltin(t testing.TB, level Level, sigmaDir string) *Classifier {
	t.Helper()
	dir := t.TempDir()
	if _, err := InstallDefaults(dir); err != nil {
		t.Fatal(err)
	}
	c, err := Load(dir, level, sigmaDir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
