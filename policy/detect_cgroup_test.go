package policy

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestUmountBPFFSStopsDoer: umount2 of the bpf file system that holds the pins, by the path Detect stored
// (also with a trailing slash), stops the doer and is recorded. Detect refuses nothing: the file system is
// gone afterwards, and the test mounts a fresh one for its cleanup.
func TestUmountBPFFSStopsDoer(t *testing.T) {
	dir := pinDir(t)
	mnt := filepath.Dir(dir)
	g := detect(t, dir)
	if _, ok := g.Hooks()[HookSysEnter]; !ok {
		t.Fatalf("sys_enter hook not attached: %v", g.Hooks())
	}
	for _, path := range []string{mnt, mnt + "/"} {
		a := startAttacker(t, "umount", 0, 0, 1, envPath+"="+path)
		a.before(t)
		e := eventFrom(t, g, a.pid, 5*time.Second)
		if s := waitState(a.pid, 'T', 5*time.Second); s != 'T' {
			t.Fatalf("attacker %d in state %q, want stopped (T)", a.pid, s)
		}
		if ran, _ := a.ranOn(t, 100*time.Millisecond); ran {
			t.Fatal("the attacker ran on after its system call")
		}
		checkDoer(t, e, a.pid)
		if e.Kind != KindUmount || e.Code != 0 || e.Syscall != unix.SYS_UMOUNT2 || e.Name != filepath.Base(mnt) ||
			!e.Stopped || e.StopErr != nil {
			t.Errorf("event %+v, want kind umount, flags 0, umount2, name %q, stopped", e, filepath.Base(mnt))
		}
		var st unix.Statfs_t
		if err := unix.Statfs(mnt, &st); err != nil || st.Type == unix.BPF_FS_MAGIC {
			t.Errorf("%s still a bpf file system after umount in detect mode (%v)", mnt, err)
		}
		if err := unix.Mount("bpf", mnt, "bpf", 0, "mode=0700"); err != nil { // for the next round and the cleanup
			t.Fatal(err)
		}
	}
	// Another path is not watched.
	other := t.TempDir()
	if err := unix.Mount("bpf", other, "bpf", 0, "mode=0700"); err != nil {
		t.Fatal(err)
	}
	a := startAttacker(t, "umount", 0, 0, 1, envPath+"="+other)
	a.before(t)
	if ran, _ := a.ranOn(t, 5*time.Second); !ran {
		t.Fatalf("umount of another bpf file system: attacker %d did not run on (state %q)", a.pid, procState(a.pid))
	}
	noEventFrom(t, g, a.pid, 100*time.Millisecond)
}

// testCgroup makes a disposable cgroup under the cgroup2 mount (the hybrid layout's
// /sys/fs/cgroup/unified here), with a child when nested, moves the process pid into the innermost and
// protects it again (its cgroups changed). The cleanup thaws, kills pid (unprotected first) and removes
// the cgroups.
func testCgroup(t *testing.T, g *Guard, pid int, nested bool) []string {
	t.Helper()
	mnt, err := cgroup2Mount()
	if err != nil || mnt == "" {
		t.Fatalf("cgroup2 mount: %q %v", mnt, err)
	}
	cgs := []string{filepath.Join(mnt, "auditarch-test-"+strconv.Itoa(os.Getpid())+"-"+strconv.Itoa(pid))}
	if nested {
		cgs = append(cgs, filepath.Join(cgs[0], "child"))
	}
	for _, cg := range cgs {
		if err := os.Mkdir(cg, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		os.WriteFile(filepath.Join(cgs[0], "cgroup.freeze"), []byte("0"), 0)
		g.Unprotect(pid)
		unix.Kill(pid, unix.SIGKILL)
		for i := len(cgs) - 1; i >= 0; i-- {
			var err error
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if err = unix.Rmdir(cgs[i]); err != unix.EBUSY {
					break
				}
			}
			if err != nil {
				t.Errorf("rmdir %s: %v", cgs[i], err)
			}
		}
	})
	if err := os.WriteFile(filepath.Join(cgs[len(cgs)-1], "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		t.Fatal(err)
	}
	if err := g.Protect(pid); err != nil {
		t.Fatal(err)
	}
	return cgs
}

// TestCgroupFreezeStopsWriter: writing 1 to cgroup.freeze of a protected process's cgroup, or of an
// ancestor of it, stops the writer and is recorded with the cgroup's id and name; the freeze itself goes
// through (detect mode refuses nothing). A protected process's freeze is neither stopped nor recorded.
func TestCgroupFreezeStopsWriter(t *testing.T) {
	g := detect(t, pinDir(t))
	if _, ok := g.Hooks()[HookCgroupFreeze]; !ok {
		t.Fatalf("cgroup_freeze hook not attached: %v", g.Hooks())
	}
	for _, c := range []struct {
		name   string
		nested bool
	}{{"own", false}, {"ancestor", true}} {
		t.Run(c.name, func(t *testing.T) {
			target := startDummy(t, g)
			cgs := testCgroup(t, g, target, c.nested)
			for _, cg := range cgs {
				var st unix.Stat_t
				if err := unix.Stat(cg, &st); err != nil {
					t.Fatal(err)
				}
				var v uint8
				if err := g.maps.Cgroups.Lookup(st.Ino, &v); err != nil {
					t.Errorf("cgroup %s (id %d) not in the cgroups map: %v", cg, st.Ino, err)
				}
			}
			written := cgs[0] // the outermost: the ancestor when nested
			var st unix.Stat_t
			if err := unix.Stat(written, &st); err != nil {
				t.Fatal(err)
			}
			a := startAttacker(t, "write", 0, 0, 1, envPath+"="+filepath.Join(written, "cgroup.freeze"), envData+"=1")
			a.before(t)
			e := eventFrom(t, g, a.pid, 5*time.Second)
			if s := waitState(a.pid, 'T', 5*time.Second); s != 'T' {
				t.Fatalf("attacker %d in state %q, want stopped (T)", a.pid, s)
			}
			checkDoer(t, e, a.pid)
			if e.Kind != KindCgroupFreeze || e.Ino != st.Ino || e.Name != filepath.Base(written) ||
				e.Syscall != unix.SYS_WRITE || e.Dev != 0 || !e.Stopped || e.StopErr != nil {
				t.Errorf("event %+v, want kind cgroup_freeze, cgroup %d %q, write, stopped", e, st.Ino, filepath.Base(written))
			}
		})
	}
	t.Run("protected-writer", func(t *testing.T) {
		target := startDummy(t, g)
		cgs := testCgroup(t, g, target, false)
		pid, err := runAttackAs(t, g, "write", 0, 0, envPath+"="+filepath.Join(cgs[0], "cgroup.freeze"), envData+"=1")
		if err != nil {
			t.Fatalf("protected write of cgroup.freeze: %v", err)
		}
		noEventFrom(t, g, pid, 100*time.Millisecond)
	})
}

// TestCgroupKillStopsWriter: writing 1 to cgroup.kill of a cgroup holding a protected process sends it
// SIGKILL from the writer's system call: signal_generate records it (si_code SI_USER) and stops the writer.
// The protected process dies (detect mode refuses nothing).
func TestCgroupKillStopsWriter(t *testing.T) {
	g := detect(t, pinDir(t))
	target := startDummy(t, g)
	cgs := testCgroup(t, g, target, false)
	a := startAttacker(t, "write", 0, 0, 1, envPath+"="+filepath.Join(cgs[0], "cgroup.kill"), envData+"=1")
	a.before(t)
	e := eventFrom(t, g, a.pid, 5*time.Second)
	if s := waitState(a.pid, 'T', 5*time.Second); s != 'T' {
		t.Fatalf("attacker %d in state %q, want stopped (T)", a.pid, s)
	}
	if ran, _ := a.ranOn(t, 100*time.Millisecond); ran {
		t.Fatal("the attacker ran on after its system call")
	}
	checkDoer(t, e, a.pid)
	if e.Kind != KindSignal || e.Signal != unix.SIGKILL || e.Code != 0 || e.TargetTGID != target || !e.Stopped ||
		e.StopErr != nil {
		t.Errorf("event %+v, want SIGKILL (SI_USER) to %d, stopped", e, target)
	}
	if s := waitState(target, 'Z', 5*time.Second); s != 'Z' {
		t.Errorf("target %d in state %q after cgroup.kill, want a zombie", target, s)
	}
}
