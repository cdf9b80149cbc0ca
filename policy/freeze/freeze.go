// Package freeze freezes a login session with the cgroup v2 freezer, which no signal undoes.
//
// When the daemon catches a process attacking it, a BPF program stops the sender at once (SIGSTOP). Anyone
// may undo a stop with SIGCONT, so the daemon then freezes the sender's whole session: Session moves every
// process of it into a new cgroup and writes 1 to that cgroup's cgroup.freeze. A frozen task does not run
// again, whatever signals it gets, until the cgroup is thawed or the task is moved out (Documentation/
// admin-guide/cgroup-v2.rst, "Core Interface Files"). SIGKILL is the exception: a fatal signal still kills
// a frozen task (its frozen parent reaps it only after thawing).
//
// Invariant: Session returns without error only after the kernel reported the session's cgroup frozen
// (cgroup.events "frozen 1") with every process of the session found in it, in a scan that found nothing
// left to move. The freeze is requested before the first process is moved, so each process stops the
// moment it lands in the cgroup and a session that forks cannot outrun the scans.
//
// # Layout: the state is in the cgroup tree
//
// cgroupfs takes no files of ours, and a state file elsewhere could disagree with the kernel. Everything
// Thaw and List need is encoded in directory names under the cgroup2 mount M:
//
//	M/auditarch.frozen/ses-<sid>-<unix ns>/       the session's cgroup; cgroup.freeze is 1
//	M/auditarch.frozen/ses-<sid>-<unix ns>/o/ORIG  the processes that came from cgroup ORIG ("0::ORIG" in
//	                                              /proc/PID/cgroup), mirrored path for path
//
// The freezer is a core cgroup v2 feature, not a controller, so nothing is delegated: auditarch.frozen
// enables no controllers in cgroup.subtree_control, which leaves its descendants free to hold processes
// at every level. In the hybrid layout (cgroup2 at /sys/fs/cgroup/unified) a process's v2 membership is
// independent of its v1 cgroups, which this package never touches. The daemon must run in the initial
// cgroup and pid namespaces: /proc/PID/cgroup paths are taken as paths under the mount's root.
//
// # Who is frozen, and what is refused
//
// The members of a session are the live processes whose session id (field 6 of /proc/PID/stat) is the
// target's, and their live descendants in other sessions (a member that calls setsid(2) does not escape;
// one that double-forks to be reparented to init before it is moved does). Zombies are skipped (they run no
// code and cannot be moved); a zombie thread-group leader with live threads is moved by its tgid.
//
// Session refuses (ErrRefused), before touching anything:
//   - session 0, that of kernel threads and of an init that never called setsid;
//   - pid 1's session;
//   - the daemon's own session (getsid(0)): the daemon runs in its own session, and an attacker that
//     shares it (a test harness, a shell that started the daemon without setsid) must not be able to get
//     the daemon frozen with it. The caller keeps such a sender stopped and alerts instead.
//
// A descendant is never followed into those three sessions, and the daemon's own process is never moved.
//
// Session and Thaw are not safe to call concurrently for one session: the daemon serialises them.
//
// # Cost
//
// Measured on the 2-core development VM (kernel 6.18, hybrid layout, about 80 processes;
// go test -run '^TestSessionLatency$' -v ./policy/freeze/): Session of a session of 3 processes (Go
// programs of several threads each) takes 17 ms at p50 and 33 ms at p99 over 50 sessions; Thaw 0.6 ms
// and 1.7 ms. A Session is two scans of /proc/*/stat (2-4 ms each here) and one write to cgroup.procs per
// process (2-5 ms each here, the bulk; unverified guess: the percpu rwsem a migration takes for writing,
// which the cgroup2 mount option favordynmods makes cheaper); the wait for "frozen 1" is under 0.1 ms.
// Everything between the BPF program's SIGSTOP and the freeze is covered by that stop, except a SIGCONT
// sent in between: the process then runs until it is moved.
package freeze

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// RootName is the directory under the cgroup2 mount that holds the frozen sessions' cgroups.
	RootName = "auditarch.frozen"
	// sessionPrefix starts the name of a session's cgroup: ses-<sid>-<unix nanoseconds>.
	sessionPrefix = "ses-"
	// originDir is the subdirectory of a session's cgroup under which the origin cgroups are mirrored.
	originDir = "o"

	// DefaultTimeout bounds the wait for cgroup.events to report "frozen 1" when Options.Timeout is 0.
	DefaultTimeout = 2 * time.Second
	// DefaultRounds bounds the scans of a session when Options.Rounds is 0.
	DefaultRounds = 16

	pfKthread = 0x00200000 // PF_KTHREAD in the flags of /proc/PID/stat (include/linux/sched.h)
)

// Errors Session, Thaw and List return, wrapped with details.
var (
	// ErrRefused: the session is one Session never freezes (see the package doc).
	ErrRefused = errors.New("session refused")
	// ErrNoCgroup2: no cgroup2 file system is mounted.
	ErrNoCgroup2 = errors.New("no cgroup2 mount")
	// ErrUnstable: processes kept appearing outside the cgroup for Options.Rounds scans.
	ErrUnstable = errors.New("session did not settle")
	// ErrNotFrozen: the kernel did not report the cgroup frozen within Options.Timeout.
	ErrNotFrozen = errors.New("cgroup not frozen in time")
	// ErrNotSession: Thaw was given a path that is not a frozen session's cgroup.
	ErrNotSession = errors.New("not a frozen session cgroup")
)

// Options configure Session. The zero value finds the cgroup2 mount and uses the defaults.
type Options struct {
	// Mount is the cgroup2 mount point; "" finds it in /proc/self/mountinfo.
	Mount string
	// Timeout bounds the wait for the kernel to report the cgroup frozen; 0 means DefaultTimeout.
	Timeout time.Duration
	// Rounds bounds the scans of /proc for members still outside the cgroup (1 ≤ Rounds); 0 means
	// DefaultRounds. A scan that moves nothing ends the loop; each round's movers are already frozen, so
	// only processes forked by not-yet-moved members can appear in the next.
	Rounds int
}

// Frozen describes a frozen session's cgroup as found in the cgroup tree.
type Frozen struct {
	Session int            // session id
	Cgroup  string         // absolute path of the session's cgroup directory
	Pids    []int          // tgids in the cgroup, ascending
	Origins map[int]string // tgid → cgroup v2 path it was moved from ("/" is the root)
	At      time.Time      // when the cgroup was created (the first Session call for this session)
}

// Session freezes the session of pid and returns its record. Calling it again for a session already
// frozen moves any stragglers into the same cgroup. On ErrUnstable and ErrNotFrozen the returned record
// is valid: the cgroup stays frozen, holding every process it got.
func Session(pid int, opts Options) (Frozen, error) {
	if pid <= 0 {
		return Frozen{}, fmt.Errorf("freeze: pid %d: %w", pid, unix.ESRCH)
	}
	sid, err := unix.Getsid(pid)
	if err != nil {
		return Frozen{}, fmt.Errorf("freeze: session of pid %d: %w", pid, err)
	}
	excluded, err := refusedSessions()
	if err != nil {
		return Frozen{}, err
	}
	if why, ok := excluded[sid]; ok {
		return Frozen{}, fmt.Errorf("freeze: session %d of pid %d: %w: %s", sid, pid, ErrRefused, why)
	}
	mount := opts.Mount
	if mount == "" {
		if mount, err = Cgroup2Mount(); err != nil {
			return Frozen{}, err
		}
	}
	mount = filepath.Clean(mount)
	rounds := opts.Rounds
	if rounds <= 0 {
		rounds = DefaultRounds
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}

	dir, err := sessionCgroup(mount, sid)
	if err != nil {
		return Frozen{}, err
	}
	if err := writeFile(filepath.Join(dir, "cgroup.freeze"), "1"); err != nil {
		return Frozen{}, fmt.Errorf("freeze: %w", err)
	}
	rel := "/" + strings.TrimPrefix(dir[len(mount):], "/")
	var errs []error
	settled := false
	for round := 0; round < rounds && !settled; round++ {
		members, err := scan(sid, excluded)
		if err != nil {
			errs = append(errs, err)
			break
		}
		settled = true
		for _, p := range members {
			moved, err := moveIn(mount, dir, rel, p)
			if err != nil {
				errs = append(errs, err)
			}
			if moved {
				settled = false
			}
		}
	}
	if !settled {
		errs = append(errs, fmt.Errorf("freeze: session %d: %w after %d scans", sid, ErrUnstable, rounds))
	}
	if err := waitFrozen(dir, timeout); err != nil {
		errs = append(errs, err)
	}
	f, err := load(mount, dir)
	if err != nil {
		errs = append(errs, err)
	}
	return f, errors.Join(errs...)
}

// refusedSessions returns the sessions Session never freezes nor follows descendants into, with why.
func refusedSessions() (map[int]string, error) {
	own, err := unix.Getsid(0)
	if err != nil {
		return nil, fmt.Errorf("freeze: own session: %w", err)
	}
	m := map[int]string{0: "session 0 is the kernel's and init's"}
	if s, err := unix.Getsid(1); err == nil {
		if _, ok := m[s]; !ok {
			m[s] = "it is pid 1's session"
		}
	}
	if _, ok := m[own]; !ok {
		m[own] = "it is the daemon's own session"
	}
	return m, nil
}

// Prepare creates the directory that holds the frozen sessions' cgroups under the cgroup2 mount, if it
// is not there, and returns the mount. A daemon that confines itself calls it first: the cgroup2 root
// directory is read-only to its owner (0555), so creating an entry in it needs CAP_DAC_OVERRIDE, which
// Session does not otherwise need (the directory Prepare makes is 0755).
func Prepare() (string, error) {
	mount, err := Cgroup2Mount()
	if err != nil {
		return "", err
	}
	if err := os.Mkdir(filepath.Join(mount, RootName), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("freeze: %w", err)
	}
	return mount, nil
}

// sessionCgroup returns the cgroup of session sid under mount: an existing one, or a new one.
func sessionCgroup(mount string, sid int) (string, error) {
	root := filepath.Join(mount, RootName)
	if err := os.Mkdir(root, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("freeze: %w", err)
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		return "", fmt.Errorf("freeze: %w", err)
	}
	for _, e := range ents {
		if s, _, ok := parseName(e.Name()); ok && s == sid && e.IsDir() {
			return filepath.Join(root, e.Name()), nil
		}
	}
	dir := filepath.Join(root, fmt.Sprintf("%s%d-%d", sessionPrefix, sid, time.Now().UnixNano()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", fmt.Errorf("freeze: %w", err)
	}
	return dir, nil
}

// parseName returns the session id and creation time encoded in a session cgroup's name.
func parseName(name string) (sid int, at time.Time, ok bool) {
	s, ok := strings.CutPrefix(name, sessionPrefix)
	if !ok {
		return 0, time.Time{}, false
	}
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return 0, time.Time{}, false
	}
	sid, err1 := strconv.Atoi(a)
	ns, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || sid <= 0 {
		return 0, time.Time{}, false
	}
	return sid, time.Unix(0, ns), true
}

// moveIn moves process p into the session cgroup dir (rel under the mount) unless it is there already,
// under o/ORIG for its current cgroup ORIG. It reports whether it moved p; a process gone meanwhile is
// not an error.
func moveIn(mount, dir, rel string, p int) (bool, error) {
	cur, err := procCgroup(p)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("freeze: pid %d: %w", p, err)
	}
	if cur == rel || strings.HasPrefix(cur, rel+"/") {
		return false, nil
	}
	orig := cur
	if orig == "/"+RootName || strings.HasPrefix(orig, "/"+RootName+"/") {
		orig = "/" // in another session's cgroup: that session's origin is not ours to keep
	}
	target := filepath.Join(dir, originDir, orig)
	if err := os.MkdirAll(target, 0o755); err != nil {
		return false, fmt.Errorf("freeze: %w", err)
	}
	err = writeFile(filepath.Join(target, "cgroup.procs"), strconv.Itoa(p))
	if errors.Is(err, unix.ESRCH) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("freeze: move pid %d: %w", p, err)
	}
	return true, nil
}

// waitFrozen waits until dir's cgroup.events reports "frozen 1", for at most timeout.
func waitFrozen(dir string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	sleep := 50 * time.Microsecond
	for {
		ev, err := readKeyed(filepath.Join(dir, "cgroup.events"))
		if err != nil {
			return fmt.Errorf("freeze: %w", err)
		}
		if ev["frozen"] == "1" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("freeze: %s: %w (%v)", dir, ErrNotFrozen, timeout)
		}
		time.Sleep(sleep)
		sleep = min(2*sleep, 5*time.Millisecond)
	}
}

// List returns the frozen sessions found under the cgroup2 mount, oldest first.
func List() ([]Frozen, error) {
	mount, err := Cgroup2Mount()
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(filepath.Join(mount, RootName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("freeze: %w", err)
	}
	var out []Frozen
	for _, e := range ents {
		if _, _, ok := parseName(e.Name()); !ok || !e.IsDir() {
			continue
		}
		f, err := load(mount, filepath.Join(mount, RootName, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // thawed meanwhile
		}
		if err != nil {
			return out, err
		}
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b Frozen) int { return a.At.Compare(b.At) })
	return out, nil
}

// load reads a session cgroup's record from the tree.
func load(mount, dir string) (Frozen, error) {
	sid, at, ok := parseName(filepath.Base(dir))
	if !ok {
		return Frozen{}, fmt.Errorf("freeze: %s: %w", dir, ErrNotSession)
	}
	f := Frozen{Session: sid, Cgroup: dir, At: at, Origins: map[int]string{}}
	base := filepath.Join(dir, originDir)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		pids, err := readPids(filepath.Join(path, "cgroup.procs"))
		if err != nil {
			return err
		}
		orig := "" // not under o/: origin unknown
		if r, err := filepath.Rel(base, path); err == nil && r != ".." && !strings.HasPrefix(r, "../") {
			orig = filepath.Clean("/" + r)
		}
		for _, p := range pids {
			f.Pids = append(f.Pids, p)
			f.Origins[p] = orig
		}
		return nil
	})
	if err != nil {
		return f, fmt.Errorf("freeze: %w", err)
	}
	slices.Sort(f.Pids)
	return f, nil
}

// Thaw ends the freeze of a session cgroup that Session made (Frozen.Cgroup). It moves each process back
// to the cgroup it came from; if that is gone, or refuses processes (EBUSY: it has controllers enabled
// for children), to its nearest ancestor that takes them, the root at last. A process moved out of the
// frozen cgroup resumes at once. It then writes 0 to cgroup.freeze (anything that could not be moved
// resumes in place) and removes the cgroup tree.
//
// Processes are moved before the thaw, not after, so that nothing forks inside the tree meanwhile. A
// process that was job-control stopped (the SIGSTOP of the sender) stays stopped: Thaw sends no signal.
func Thaw(cgroup string) error {
	dir := filepath.Clean(cgroup)
	if _, _, ok := parseName(filepath.Base(dir)); !ok || filepath.Base(filepath.Dir(dir)) != RootName {
		return fmt.Errorf("freeze: thaw %s: %w", cgroup, ErrNotSession)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("freeze: thaw: %w", &fs.PathError{Op: "statfs", Path: dir, Err: err})
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return fmt.Errorf("freeze: thaw %s: %w: not on cgroup2", cgroup, ErrNotSession)
	}
	mount := filepath.Dir(filepath.Dir(dir))
	f, err := load(mount, dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range f.Pids {
		if err := moveBack(mount, p, f.Origins[p]); err != nil {
			errs = append(errs, err)
		}
	}
	if err := writeFile(filepath.Join(dir, "cgroup.freeze"), "0"); err != nil {
		return errors.Join(append(errs, fmt.Errorf("freeze: thaw: %w", err))...)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return removeTree(dir)
}

// moveBack moves p to mount+orig, or to the nearest ancestor of it that takes the process.
func moveBack(mount string, p int, orig string) error {
	if orig == "" {
		orig = "/"
	}
	for c := orig; ; c = filepath.Dir(c) {
		err := writeFile(filepath.Join(mount, c, "cgroup.procs"), strconv.Itoa(p))
		switch {
		case err == nil, errors.Is(err, unix.ESRCH):
			return nil
		case c == "/":
			return fmt.Errorf("freeze: thaw: move pid %d: %w", p, err)
		}
		// ENOENT: the origin is gone; EBUSY, EOPNOTSUPP: it no longer takes processes. Try its parent.
	}
}

// removeTree removes a cgroup directory and its descendants, deepest first. A cgroup whose last process
// has just exited can still be busy for a moment, so EBUSY is retried for up to a second.
func removeTree(dir string) error {
	var dirs []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("freeze: remove: %w", err)
	}
	deadline := time.Now().Add(time.Second)
	for i := len(dirs) - 1; i >= 0; i-- {
		for {
			err := unix.Rmdir(dirs[i])
			if err == nil || err == unix.ENOENT {
				break
			}
			if err != unix.EBUSY || time.Now().After(deadline) {
				return fmt.Errorf("freeze: remove: %w", &fs.PathError{Op: "rmdir", Path: dirs[i], Err: err})
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return nil
}

// Cgroup2Mount returns the mount point of the cgroup2 file system whose root is the hierarchy's root, as
// /proc/self/mountinfo lists it: /sys/fs/cgroup in the unified layout, /sys/fs/cgroup/unified in the
// hybrid one.
func Cgroup2Mount() (string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("freeze: %w", err)
	}
	return parseMountinfo(b)
}

// parseMountinfo finds the first cgroup2 mount of the hierarchy's root in a mountinfo text
// (proc(5): "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue").
func parseMountinfo(b []byte) (string, error) {
	for line := range strings.SplitSeq(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 1 || g[0] != "cgroup2" || f[3] != "/" {
			continue
		}
		return unescapeOctal(f[4]), nil
	}
	return "", fmt.Errorf("freeze: %w in /proc/self/mountinfo", ErrNoCgroup2)
}

// unescapeOctal undoes mountinfo's \ooo escapes (space, tab, newline, backslash).
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// stat is the part of /proc/PID/stat a scan needs.
type stat struct {
	pid, ppid, session int
	state              byte
	flags              uint64
}

// parseStat parses /proc/PID/stat; comm may hold spaces and parentheses, so fields count from the last ')'.
func parseStat(b []byte) (stat, error) {
	i := bytes.IndexByte(b, '(')
	j := bytes.LastIndexByte(b, ')')
	if i < 0 || j < i {
		return stat{}, errors.New("malformed stat")
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:i])))
	if err != nil {
		return stat{}, fmt.Errorf("malformed stat: %w", err)
	}
	f := strings.Fields(string(b[j+1:]))
	// state ppid pgrp session tty_nr tpgid flags ...
	if len(f) < 7 || len(f[0]) != 1 {
		return stat{}, errors.New("malformed stat")
	}
	s := stat{pid: pid, state: f[0][0]}
	var e1, e2, e3 error
	s.ppid, e1 = strconv.Atoi(f[1])
	s.session, e2 = strconv.Atoi(f[3])
	s.flags, e3 = strconv.ParseUint(f[6], 10, 64)
	if err := errors.Join(e1, e2, e3); err != nil {
		return stat{}, fmt.Errorf("malformed stat: %w", err)
	}
	return s, nil
}

// scan returns the live members of session sid (package doc): its processes, and their descendants in
// sessions not excluded. The daemon itself is never a member.
func scan(sid int, excluded map[int]string) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("freeze: %w", err)
	}
	self := os.Getpid()
	all := map[int]stat{}
	children := map[int][]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // exited
		}
		s, err := parseStat(b)
		if err != nil || s.pid != p || s.flags&pfKthread != 0 {
			continue
		}
		all[p] = s
		children[s.ppid] = append(children[s.ppid], p)
	}
	var members, queue []int
	seen := map[int]bool{}
	for p, s := range all {
		if s.session == sid {
			queue = append(queue, p)
			seen[p] = true
		}
	}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p != self && live(all[p]) {
			members = append(members, p)
		}
		for _, c := range children[p] {
			if _, no := excluded[all[c].session]; !seen[c] && !no {
				seen[c] = true
				queue = append(queue, c)
			}
		}
	}
	slices.Sort(members)
	return members, nil
}

// live reports whether a process has a thread that can still run: it is no zombie, or it is a zombie
// thread-group leader whose other threads live on.
func live(s stat) bool {
	if s.state != 'Z' && s.state != 'X' {
		return true
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", s.pid))
	if err != nil {
		return false
	}
	for _, e := range ents {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", s.pid, e.Name()))
		if err != nil {
			continue
		}
		if t, err := parseStat(b); err == nil && t.state != 'Z' && t.state != 'X' {
			return true
		}
	}
	return false
}

// procCgroup returns the cgroup v2 path of process p (the "0::" line of /proc/PID/cgroup).
func procCgroup(p int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", p))
	if err != nil {
		return "", err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok {
			return path, nil
		}
	}
	return "", fmt.Errorf("no cgroup v2 line in /proc/%d/cgroup", p)
}

// writeFile writes s to a cgroupfs file in one write(2), as cgroupfs wants (one pid per write).
func writeFile(path, s string) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(s)); err != nil {
		return &fs.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}

// readPids reads a cgroup.procs file.
func readPids(path string) ([]int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		p, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		pids = append(pids, p)
	}
	return pids, nil
}

// readKeyed reads a flat keyed cgroupfs file such as cgroup.events ("populated 1\nfrozen 0\n").
func readKeyed(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok {
			m[k] = v
		}
	}
	return m, nil
}
