package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// TestDevEncoding: the device number stat(2) reports (glibc's and new_encode_dev's layout: minor's low
// byte, major, minor's upper bits) is turned into the kernel's sb->s_dev (major << 20 | minor) and back,
// also for minors above 255 (anonymous devices: tmpfs, cgroup2, bpffs).
func TestDevEncoding(t *testing.T) {
	for _, c := range []struct{ major, minor uint32 }{{0, 0}, {8, 1}, {0, 46}, {0, 300}, {259, 65537}, {4095, 1<<20 - 1}} {
		user := unix.Mkdev(c.major, c.minor)
		kdev := kernelDev(user)
		if want := uint64(c.major)<<20 | uint64(c.minor); kdev != want {
			t.Errorf("kernelDev(%d:%d = %#x) = %#x, want %#x", c.major, c.minor, user, kdev, want)
		}
		if back := userDev(kdev); back != user {
			t.Errorf("userDev(%#x) = %#x, want %#x", kdev, back, user)
		}
	}
	// A real one: this file system's, as /proc/self/mountinfo writes it (MAJ:MIN, the kernel's numbers).
	var st unix.Stat_t
	if err := unix.Stat(".", &st); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	want := strconv.FormatUint(kernelDev(st.Dev)>>20, 10) + ":" + strconv.FormatUint(kernelDev(st.Dev)&(1<<20-1), 10)
	if !strings.Contains(string(b), " "+want+" ") {
		t.Errorf("no mount with device %s (from st_dev %#x) in /proc/self/mountinfo", want, st.Dev)
	}
}

// attrSize is ATTR_SIZE (include/linux/fs.h): a setattr that changes the size (truncate).
const attrSize = 1 << 3

// fileRow is one attempt on a protected file in the guest.
type fileRow struct {
	name, method string
	path, path2  string
	data         string
	op           FileOp   // KindFile's code
	matched      PathFlag // Event.Result
	entry        string   // Event.Name
}

// fileMatrix: in the guest, with enforce mode attached, each operation on a protected file, a protected
// directory's entry, the pins, the pins' bpf file system and the victim's cgroup is refused with EPERM
// and recorded with the file's name, inode and device; a protected process may do each; an unprotected
// file stays writable.
func fileMatrix(t *testing.T, g *Guard, pins string) {
	base := t.TempDir()
	dir := filepath.Join(base, "archive") // FlagDir
	file := filepath.Join(base, "file")   // FlagFile
	key := filepath.Join(base, "key")     // FlagFile|FlagNoRead
	free := filepath.Join(base, "free")   // not protected
	for _, d := range []string{dir, filepath.Join(dir, "sub")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{file, key, free, filepath.Join(base, "outside"), filepath.Join(dir, "seg")} {
		if err := os.WriteFile(f, []byte("evidence"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	protect := func(t *testing.T, path string, flags PathFlag) {
		t.Helper()
		if err := g.ProtectPath(path, flags); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := g.UnprotectPath(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Error(err)
			}
		})
		if f, err := g.PathFlags(path); err != nil || f != flags {
			t.Fatalf("PathFlags(%s) = %v, %v; want %v", path, f, err, flags)
		}
	}
	protect(t, dir, FlagDir)
	protect(t, file, FlagFile)
	protect(t, key, FlagFile|FlagNoRead)
	protect(t, pins, FlagDir)
	seg := filepath.Join(dir, "seg")
	pin := filepath.Join(pins, "protected")
	for _, c := range []fileRow{
		{name: "rm-dir-entry", method: "unlink", path: seg, op: FileUnlink, matched: FlagDir, entry: "seg"},
		{name: "mv-dir-entry-out", method: "rename", path: seg, path2: filepath.Join(base, "seg"), op: FileRename, matched: FlagDir, entry: "seg"},
		{name: "mv-over-dir-entry", method: "rename", path: filepath.Join(base, "outside"), path2: seg, op: FileRename, matched: FlagDir, entry: "outside"},
		{name: "rmdir-dir-entry", method: "rmdir", path: filepath.Join(dir, "sub"), op: FileRmdir, matched: FlagDir, entry: "sub"},
		{name: "write-dir-entry", method: "open-write", path: seg, op: FileOpenWrite, matched: FlagDir, entry: "seg"},
		{name: "truncate-dir-entry", method: "truncate", path: seg, op: FileSetattr, matched: FlagDir, entry: "seg"},
		{name: "link-dir-entry", method: "link", path: seg, path2: filepath.Join(base, "seg.link"), op: FileLink, matched: FlagDir, entry: "seg"},
		{name: "truncate-file", method: "truncate", path: file, op: FileSetattr, matched: FlagFile, entry: "file"},
		{name: "write-file", method: "open-write", path: file, op: FileOpenWrite, matched: FlagFile, entry: "file"},
		{name: "rm-file", method: "unlink", path: file, op: FileUnlink, matched: FlagFile, entry: "file"},
		{name: "mv-file", method: "rename", path: file, path2: file + ".moved", op: FileRename, matched: FlagFile, entry: "file"},
		{name: "link-file", method: "link", path: file, path2: file + ".link", op: FileLink, matched: FlagFile, entry: "file"},
		{name: "read-key", method: "open-read", path: key, op: FileOpenRead, matched: FlagFile | FlagNoRead, entry: "key"},
		{name: "write-key", method: "open-write", path: key, op: FileOpenWrite, matched: FlagFile | FlagNoRead, entry: "key"},
		{name: "unlink-pin", method: "unlink", path: pin, op: FileUnlink, matched: FlagDir, entry: "protected"},
		{name: "mv-pin", method: "rename", path: pin, path2: filepath.Join(pins, "moved"), op: FileRename, matched: FlagDir, entry: "protected"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var st unix.Stat_t
			if err := unix.Stat(c.path, &st); err != nil {
				t.Fatal(err)
			}
			pid, err := runAttack(t, c.method, 0, 0, envPath+"="+c.path, envPath2+"="+c.path2, envData+"="+c.data)
			if err != unix.EPERM {
				t.Fatalf("%s %s: %v, want EPERM", c.method, c.path, err)
			}
			e := eventFrom(t, g, pid, 5*time.Second)
			checkDeniedDoer(t, e, pid)
			checkFileEvent(t, e, c, &st)
			var after unix.Stat_t
			if err := unix.Stat(c.path, &after); err != nil || after.Ino != st.Ino || after.Size != st.Size {
				t.Errorf("%s changed: %v, inode %d size %d, was %d %d", c.path, err, after.Ino, after.Size, st.Ino, st.Size)
			}
		})
	}
	t.Run("cgroup", func(t *testing.T) { cgroupRows(t, g) })
	t.Run("umount-bpffs", func(t *testing.T) {
		mnt := filepath.Dir(pins)
		var st unix.Stat_t
		if err := unix.Stat(mnt, &st); err != nil {
			t.Fatal(err)
		}
		pid, err := runAttack(t, "umount", 0, 0, envPath+"="+mnt)
		if err != unix.EPERM {
			t.Fatalf("umount %s: %v, want EPERM", mnt, err)
		}
		e := eventFrom(t, g, pid, 5*time.Second)
		checkDeniedDoer(t, e, pid)
		if e.Kind != KindUmount || e.Code != 0 || e.Syscall != unix.SYS_UMOUNT2 || e.Name != filepath.Base(mnt) ||
			e.Ino != st.Ino || e.Dev != st.Dev {
			t.Errorf("event %+v, want kind umount, code 0, umount2, name %q, inode %d, dev %#x", e, filepath.Base(mnt), st.Ino, st.Dev)
		}
	})

	// Exemption: a protected process may do each, unrecorded.
	exempt := func(t *testing.T, method, path, path2, data string) {
		t.Helper()
		pid, err := runAttackAs(t, g, method, 0, 0, envPath+"="+path, envPath2+"="+path2, envData+"="+data)
		if err != nil {
			t.Fatalf("protected %s %s: %v", method, path, err)
		}
		noEventFrom(t, g, pid, 50*time.Millisecond)
	}
	t.Run("exempt", func(t *testing.T) {
		exempt(t, "open-read", key, "", "")
		exempt(t, "open-write", key, "", "")
		exempt(t, "open-write", seg, "", "")
		exempt(t, "truncate", seg, "", "")
		exempt(t, "truncate", file, "", "")
		exempt(t, "link", file, file+".link", "")
		exempt(t, "unlink", file+".link", "", "")
		exempt(t, "link", seg, filepath.Join(base, "seg.link"), "")
		exempt(t, "rename", seg, filepath.Join(dir, "seg2"), "")
		exempt(t, "rmdir", filepath.Join(dir, "sub"), "", "")
		exempt(t, "unlink", filepath.Join(dir, "seg2"), "", "")
		// A pin of the pin directory: a map pinned for this row.
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if err := m.Pin(filepath.Join(pins, "extra")); err != nil { // creating an entry is let through
			t.Fatalf("pin in the protected pin directory: %v", err)
		}
		exempt(t, "unlink", filepath.Join(pins, "extra"), "", "")
		// Another bpf file system, mounted for this row.
		mnt := filepath.Join(base, "bpffs2")
		if err := os.Mkdir(mnt, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("bpf", mnt, "bpf", 0, ""); err != nil {
			t.Fatal(err)
		}
		exempt(t, "umount", mnt, "", "")
	})
	t.Run("unprotected-file", func(t *testing.T) {
		for _, m := range []string{"open-write", "truncate", "unlink"} {
			pid, err := runAttack(t, m, 0, 0, envPath+"="+free)
			if err != nil {
				t.Fatalf("%s of an unprotected file: %v", m, err)
			}
			noEventFrom(t, g, pid, 50*time.Millisecond)
		}
		// A new file in a protected directory can be created (mkdir, here), not written.
		pid, err := runAttack(t, "open-read", 0, 0, envPath+"="+dir)
		if err != nil {
			t.Fatalf("reading a protected directory: %v", err)
		}
		noEventFrom(t, g, pid, 50*time.Millisecond)
	})
}

// checkFileEvent compares a KindFile event with the row and the file's stat before the attempt.
func checkFileEvent(t *testing.T, e Event, c fileRow, st *unix.Stat_t) {
	t.Helper()
	if e.Kind != KindFile || FileOp(e.Code) != c.op || PathFlag(e.Result) != c.matched || e.Name != c.entry ||
		e.Ino != st.Ino || e.Dev != st.Dev || e.TargetTGID != 0 {
		t.Errorf("event %+v, want kind file, %v, matched %v, name %q, inode %d, dev %#x", e, c.op, c.matched, c.entry, st.Ino, st.Dev)
	}
	want := map[string]int{"unlink": unix.SYS_UNLINKAT, "rename": unix.SYS_RENAMEAT, "rmdir": unix.SYS_UNLINKAT,
		"link": unix.SYS_LINKAT, "truncate": unix.SYS_TRUNCATE, "open-write": unix.SYS_OPENAT,
		"open-read": unix.SYS_OPENAT, "write": unix.SYS_OPENAT}[c.method]
	if e.Syscall != want {
		t.Errorf("syscall %d, want %d", e.Syscall, want)
	}
	switch c.op {
	case FileSetattr:
		if e.ID&attrSize == 0 {
			t.Errorf("setattr bits %#x, want ATTR_SIZE", e.ID)
		}
	case FileOpenWrite:
		if e.ID&unix.O_ACCMODE != unix.O_WRONLY {
			t.Errorf("open flags %#x, want O_WRONLY", e.ID)
		}
	}
}

// cgroupRows: the victim's cgroup directory protected with FlagDir: writing 1 to its cgroup.kill or
// cgroup.freeze, or moving a process with cgroup.procs, is refused and recorded; so is writing to the
// parent cgroup's cgroup.kill and cgroup.freeze (an ancestor: no ProtectPath needed), not to its other
// files; the victim lives on, not frozen; a protected process may still write them.
func cgroupRows(t *testing.T, g *Guard) {
	v := startVictim(t, g)
	cg := victimCgroup(t, g, v.pid)
	parent := filepath.Dir(cg)
	for _, c := range []fileRow{
		{name: "parent-cgroup.kill", method: "write", path: filepath.Join(parent, "cgroup.kill"), data: "1", op: FileOpenWrite, matched: FlagCgroup, entry: "cgroup.kill"},
		{name: "parent-cgroup.freeze", method: "write", path: filepath.Join(parent, "cgroup.freeze"), data: "1", op: FileOpenWrite, matched: FlagCgroup, entry: "cgroup.freeze"},
		{name: "cgroup.kill", method: "write", path: filepath.Join(cg, "cgroup.kill"), data: "1", op: FileOpenWrite, matched: FlagDir, entry: "cgroup.kill"},
		{name: "cgroup.freeze", method: "write", path: filepath.Join(cg, "cgroup.freeze"), data: "1", op: FileOpenWrite, matched: FlagDir, entry: "cgroup.freeze"},
		{name: "cgroup.procs", method: "write", path: filepath.Join(cg, "cgroup.procs"), data: "1", op: FileOpenWrite, matched: FlagDir, entry: "cgroup.procs"},
		{name: "rmdir", method: "rmdir", path: cg, op: FileRmdir, matched: FlagDir, entry: filepath.Base(cg)},
	} {
		t.Run(c.name, func(t *testing.T) {
			var st unix.Stat_t
			if err := unix.Stat(c.path, &st); err != nil {
				t.Fatal(err)
			}
			pid, err := runAttack(t, c.method, 0, 0, envPath+"="+c.path, envData+"="+c.data)
			if err != unix.EPERM {
				t.Fatalf("%s %s: %v, want EPERM", c.method, c.path, err)
			}
			e := eventFrom(t, g, pid, 5*time.Second)
			checkDeniedDoer(t, e, pid)
			if c.method == "rmdir" {
				c.matched = FlagDir // the directory itself
			}
			checkFileEvent(t, e, c, &st)
			checkAlive(t, v.pid, 100*time.Millisecond)
			if ev, _ := os.ReadFile(filepath.Join(cg, "cgroup.events")); !strings.Contains(string(ev), "frozen 0") {
				t.Errorf("victim's cgroup.events: %q, want frozen 0", ev)
			}
		})
	}
	t.Run("parent-other-file", func(t *testing.T) {
		pid, err := runAttack(t, "write", 0, 0, envPath+"="+filepath.Join(parent, "cgroup.max.depth"), envData+"=max")
		if err != nil {
			t.Fatalf("write of the parent cgroup's cgroup.max.depth: %v", err)
		}
		noEventFrom(t, g, pid, 50*time.Millisecond)
	})
	t.Run("exempt", func(t *testing.T) {
		pid, err := runAttackAs(t, g, "write", 0, 0, envPath+"="+filepath.Join(parent, "cgroup.freeze"), envData+"=0")
		if err != nil {
			t.Fatalf("protected write of the parent's cgroup.freeze: %v", err)
		}
		noEventFrom(t, g, pid, 50*time.Millisecond)
		pid, err = runAttackAs(t, g, "write", 0, 0, envPath+"="+filepath.Join(cg, "cgroup.freeze"), envData+"=0")
		if err != nil {
			t.Fatalf("protected write of cgroup.freeze: %v", err)
		}
		noEventFrom(t, g, pid, 50*time.Millisecond)
		pid, err = runAttackAs(t, g, "write", 0, 0, envPath+"="+filepath.Join(cg, "cgroup.kill"), envData+"=1")
		if err != nil {
			t.Fatalf("protected write of cgroup.kill: %v", err)
		}
		noEventFrom(t, g, pid, 50*time.Millisecond)
		if s := waitState(v.pid, 'Z', 5*time.Second); s != 'Z' {
			t.Errorf("victim in state %q after a protected process killed its cgroup, want a zombie", s)
		}
	})
}

// victimCgroup moves the process pid into a new cgroup (the child of a new cgroup) under the cgroup2 mount,
// protects that directory with FlagDir, and registers a cleanup that unprotects it, kills the process and
// removes both cgroups.
func victimCgroup(t *testing.T, g *Guard, pid int) string {
	t.Helper()
	mnt, err := cgroup2Mount()
	if err != nil || mnt == "" {
		t.Fatalf("cgroup2 mount: %q %v", mnt, err)
	}
	parent := filepath.Join(mnt, "auditarch-test-"+strconv.Itoa(os.Getpid())+"-"+strconv.Itoa(pid))
	cg := filepath.Join(parent, "victim")
	for _, d := range []string{parent, cg} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if err := g.UnprotectPath(cg); err != nil {
			t.Error(err)
		}
		os.WriteFile(filepath.Join(cg, "cgroup.freeze"), []byte("0"), 0)
		g.Unprotect(pid)
		unix.Kill(pid, unix.SIGKILL)
		for _, d := range []string{cg, parent} {
			var err error
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if err = unix.Rmdir(d); err != unix.EBUSY {
					break
				}
			}
			if err != nil {
				t.Errorf("rmdir %s: %v", d, err)
			}
		}
	})
	if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		t.Fatal(err)
	}
	if got, err := CgroupPath(pid); err != nil || got != cg {
		t.Fatalf("CgroupPath(%d) = %q, %v; want %q", pid, got, err, cg)
	}
	if err := g.Protect(pid); err != nil { // again: its cgroups have changed
		t.Fatal(err)
	}
	if err := g.ProtectPath(cg, FlagDir); err != nil {
		t.Fatal(err)
	}
	return cg
}

// auditMatrix: audit netlink messages that change the kernel's audit state are refused with EPERM and
// recorded with their type, also behind a harmless one in the same sendmsg; reads pass; a protected
// process may send them.
func auditMatrix(t *testing.T, g *Guard) {
	for _, c := range []struct {
		method string
		typ    int32
		mask   uint32
	}{
		{"audit-del-rule", auditDelRule, 0},
		{"audit-set-enabled0", auditSet, auditStatusEnabled},
		{"audit-set-pid", auditSet, auditStatusPID},
		{"audit-set-none", auditSet, 0},
		{"audit-get-then-del", auditDelRule, 0},
	} {
		t.Run(c.method, func(t *testing.T) {
			pid, err := runAttack(t, c.method, 0, 0)
			if err != unix.EPERM {
				t.Fatalf("%s: %v, want EPERM", c.method, err)
			}
			e := eventFrom(t, g, pid, 5*time.Second)
			checkDeniedDoer(t, e, pid)
			if e.Kind != KindAuditControl || e.Code != c.typ || e.ID != c.mask || e.Syscall != unix.SYS_SENDTO {
				t.Errorf("event %+v, want kind audit_control, type %d, mask %d, sendto", e, c.typ, c.mask)
			}
		})
	}
	t.Run("read", func(t *testing.T) {
		pid, err := runAttack(t, "audit-get", 0, 0)
		if err != nil {
			t.Fatalf("AUDIT_GET: %v", err)
		}
		noEventFrom(t, g, pid, 50*time.Millisecond)
	})
	t.Run("exempt", func(t *testing.T) {
		for _, m := range []string{"audit-set-none", "audit-del-rule", "audit-get-then-del"} {
			pid, err := runAttackAs(t, g, m, 0, 0)
			if err != nil {
				t.Fatalf("protected %s: %v", m, err)
			}
			noEventFrom(t, g, pid, 50*time.Millisecond)
		}
	})
}
