package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/verify"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/internal/capfile"
	"github.com/auditarch/auditarch/internal/privtest"
	"github.com/auditarch/auditarch/store"
)

var update = flag.Bool("update", false, "rewrite testdata captures from the real kernel")

// workloadEnv makes the test binary act as the workload (the daemon excludes its own pid, so the
// workload must be another process).
const workloadEnv = "AUDITARCH_TEST_WORKLOAD"

// mainEnv makes the test binary act as the auditarch command itself; holdEnv makes it register as the
// kernel's audit daemon and wait for its stdin to close (another daemon, for the refusal test).
const (
	mainEnv = "AUDITARCH_TEST_MAIN"
	holdEnv = "AUDITARCH_TEST_HOLD"
)

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) != "" {
		os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	if os.Getenv(holdEnv) != "" {
		os.Exit(hold())
	}
	if spec := os.Getenv(attackerEnv); spec != "" {
		os.Exit(attacker(spec))
	}
	if os.Getenv(trueEnv) != "" {
		os.Exit(0)
	}
	if spec := os.Getenv(opensEnv); spec != "" {
		os.Exit(opens(spec))
	}
	if os.Getenv(workloadEnv) != "" {
		if err := workload(os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "workload:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// workloadReport is what the workload did, for the test to find and check the events.
type workloadReport struct {
	PID      int        `json:"pid"`
	Cwd      string     `json:"cwd"`
	Execs    []execDone `json:"execs"`
	Port4    int        `json:"port4"`
	Port6    int        `json:"port6"`
	Abstract string     `json:"abstract"`
	Created  string     `json:"created"`
	Renamed  string     `json:"renamed"`
	ShPID    int        `json:"sh_pid"`
	SleepPID int        `json:"sleep_pid"`
}

type execDone struct {
	PID  int      `json:"pid"`
	Args []string `json:"args"`
}

// Arguments that the kernel must hex-encode, split, or spread over several EXECVE records.
func hardArgs() []string {
	return []string{"/bin/true", "with space", `say "hi"`, "new\nline", "", "\xff\xfe-not-utf8", "tab\there",
		strings.Repeat("L", 12000), "plain"}
}

func manyArgs() []string {
	args := []string{"/bin/true"}
	for i := 1; i <= 400; i++ {
		args = append(args, fmt.Sprintf("argument-%03d-%s", i, strings.Repeat("x", 20)))
	}
	return args
}

func workload(out io.Writer) error {
	rep := workloadReport{PID: os.Getpid()}
	rep.Cwd, _ = os.Getwd()
	for _, args := range [][]string{hardArgs(), manyArgs()} {
		cmd := &exec.Cmd{Path: args[0], Args: args}
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("exec: %w", err)
		}
		rep.Execs = append(rep.Execs, execDone{PID: cmd.Process.Pid, Args: args})
	}
	// connect with blocking sockets, so each connect completes (success=yes).
	l4, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer l4.Close()
	rep.Port4 = l4.Addr().(*net.TCPAddr).Port
	if err := connectRaw(unix.AF_INET, &unix.SockaddrInet4{Port: rep.Port4, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return fmt.Errorf("connect inet: %w", err)
	}
	if l6, err := net.Listen("tcp6", "[::1]:0"); err == nil {
		defer l6.Close()
		rep.Port6 = l6.Addr().(*net.TCPAddr).Port
		if err := connectRaw(unix.AF_INET6, &unix.SockaddrInet6{Port: rep.Port6, Addr: [16]byte{15: 1}}); err != nil {
			return fmt.Errorf("connect inet6: %w", err)
		}
	}
	rep.Abstract = fmt.Sprintf("auditarch-test-%d", os.Getpid())
	lu, err := net.Listen("unix", "@"+rep.Abstract)
	if err != nil {
		return err
	}
	defer lu.Close()
	if err := connectRaw(unix.AF_UNIX, &unix.SockaddrUnix{Name: "@" + rep.Abstract}); err != nil {
		return fmt.Errorf("connect abstract: %w", err)
	}
	// files: create, open for writing, rename, set times, unlink.
	dir := os.Getenv(workloadEnv)
	rep.Created = filepath.Join(dir, "created.txt")
	rep.Renamed = filepath.Join(dir, "renamed.txt")
	fd, err := unix.Open(rep.Created, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	unix.Close(fd)
	if fd, err = unix.Open(rep.Created, unix.O_RDWR|unix.O_CLOEXEC, 0); err != nil {
		return err
	}
	unix.Close(fd)
	if err := unix.Rename(rep.Created, rep.Renamed); err != nil {
		return err
	}
	ts := []unix.Timespec{{Sec: 1_000_000_000}, {Sec: 1_000_000_000}}
	if err := unix.UtimesNano(rep.Renamed, ts); err != nil {
		return err
	}
	if err := unix.Unlink(rep.Renamed); err != nil {
		return err
	}
	// fork a shell that exits with status 7.
	sh := exec.Command("/bin/sh", "-c", "exit 7")
	var ee *exec.ExitError
	if err := sh.Run(); !errors.As(err, &ee) || ee.ExitCode() != 7 {
		return fmt.Errorf("sh exit 7: %v", err)
	}
	rep.ShPID = sh.Process.Pid
	// kill a child with SIGTERM.
	sl := exec.Command("/bin/sleep", "60")
	if err := sl.Start(); err != nil {
		return err
	}
	rep.SleepPID = sl.Process.Pid
	if err := unix.Kill(sl.Process.Pid, unix.SIGTERM); err != nil {
		return err
	}
	sl.Wait()
	return json.NewEncoder(out).Encode(rep)
}

func connectRaw(family int, sa unix.Sockaddr) error {
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Connect(fd, sa)
}

// startDaemon runs the daemon in-process on the real kernel and returns a stop function that waits for
// it to flush and restore the kernel.
func startDaemon(t *testing.T, dir string) (stop func()) {
	t.Helper()
	privtest.Kernel(t)
	cfg := defaultConfig()
	cfg.Archive = dir
	cfg.Key = filepath.Join(filepath.Dir(dir), "keys", "host.key")
	cfg.Sandbox = SandboxOff // in-process: the sandbox would confine the test binary (daemon tests run it)
	ctx, cancel := context.WithCancel(context.Background())
	var logBuf bytes.Buffer
	done := make(chan error, 1)
	t.Cleanup(func() { store.ClearImmutable(filepath.Join(filepath.Dir(dir), "store")) })
	go func() { done <- run(ctx, cfg, zerolog.New(zerolog.SyncWriter(&logBuf))) }()
	// Wait until the rules are in: the daemon logs "capturing".
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(logBuf.String(), "capturing") {
		select {
		case err := <-done:
			t.Fatalf("daemon stopped early: %v\n%s", err, logBuf.String())
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("daemon did not start: %s", logBuf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("daemon: %v\n%s", err, logBuf.String())
			}
		case <-time.After(30 * time.Second):
			t.Errorf("daemon did not stop within 30 s")
		}
	}
	t.Cleanup(stop)
	return stop
}

// readArchive returns every event in dir, decoded, with its raw form.
func readArchive(t *testing.T, dir string) ([]*audit.Event, []*audit.RawEvent) {
	t.Helper()
	r, err := archive.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var evs []*audit.Event
	var raws []*audit.RawEvent
	for {
		raw, idx, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read archive: %v", err)
		}
		ev := audit.Decode(raw)
		ev.Index = idx
		evs = append(evs, ev)
		raws = append(raws, raw.Clone())
	}
	return evs, raws
}

func TestCaptureRealKernel(t *testing.T) {
	dir := t.TempDir()
	stop := startDaemon(t, filepath.Join(dir, "archive"))

	work := filepath.Join(dir, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), workloadEnv+"="+work)
	cmd.Dir = work
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("workload: %v\n%s", err, stderr.String())
	}
	var rep workloadReport
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("workload report: %v: %q", err, stdout.String())
	}
	time.Sleep(300 * time.Millisecond) // the last events reach the socket
	stop()

	evs, raws := readArchive(t, filepath.Join(dir, "archive"))
	// The daemon's archive proves itself against the key it created.
	pub, _, err := archive.LoadVerifierKey(filepath.Join(dir, "keys", archive.IdentityPubFile))
	if err != nil {
		t.Fatal(err)
	}
	vr, err := verify.Dir(filepath.Join(dir, "archive"), verify.Options{Key: pub})
	if err != nil {
		t.Fatal(err)
	}
	if vr.Status != verify.Pass || len(vr.Runs) != 1 || vr.Runs[0].Ended != "stopped" || vr.Verified != vr.Leaves {
		t.Errorf("verify after the daemon stopped: %s, runs %+v, %d of %d leaves verified: %+v", vr.Status, vr.Runs, vr.Verified, vr.Leaves, vr.Problems)
	}
	// Without a configured store, run shipped everything to its embedded store, which gave receipts.
	checkStoreCopy(t, filepath.Join(dir, "archive"), pub)
	rd, err := archive.Open(filepath.Join(dir, "archive"))
	if err != nil {
		t.Fatal(err)
	}
	if l, i, err := rd.NextLeaf(); err != nil || i != 0 || l.Kind != archive.LeafStart ||
		!strings.Contains(string(l.Body), `"kernel":{"backlog":`) || !strings.Contains(string(l.Body), `"config_digest":"`) {
		t.Errorf("leaf 0 is not a START with the kernel's audit status and the config digest: %v %d %v %s", err, i, l.Kind, l.Body)
	}
	ours := map[int]bool{rep.PID: true, rep.ShPID: true, rep.SleepPID: true}
	for _, e := range rep.Execs {
		ours[e.PID] = true
	}
	var mine []*audit.Event
	var mineRaw []*audit.RawEvent
	for i, ev := range evs {
		if ev.PID != nil && ours[int(*ev.PID)] {
			mine = append(mine, ev)
			mineRaw = append(mineRaw, raws[i])
		}
	}
	if len(mine) == 0 {
		t.Fatalf("no events from the workload among %d archived", len(evs))
	}
	find := func(what string, match func(*audit.Event) bool) *audit.Event {
		t.Helper()
		for _, ev := range mine {
			if match(ev) {
				return ev
			}
		}
		t.Errorf("no %s event", what)
		return nil
	}
	pidIs := func(ev *audit.Event, pid int) bool { return ev.PID != nil && int(*ev.PID) == pid }

	// execve with hard arguments, and with 401 arguments over several EXECVE records.
	wantArgs := [][]string{hardArgs(), manyArgs()} // not from the JSON report: it replaces invalid UTF-8
	for i, ex := range rep.Execs {
		ex.Args = wantArgs[i]
		ev := find(fmt.Sprintf("execve #%d", i), func(ev *audit.Event) bool { return ev.Sys == "execve" && pidIs(ev, ex.PID) })
		if ev == nil {
			continue
		}
		if !slices.Equal(ev.Args, ex.Args) {
			t.Errorf("execve #%d args:\n got %q\nwant %q", i, trunc(ev.Args), trunc(ex.Args))
		}
		if ev.Argc == nil || *ev.Argc != len(ex.Args) {
			t.Errorf("execve #%d argc = %v, want %d", i, ev.Argc, len(ex.Args))
		}
		checkProc(t, ev, "execve", ex.PID, rep.PID)
		if ev.Success == nil || !*ev.Success || ev.Exit == nil || *ev.Exit != 0 {
			t.Errorf("execve #%d success/exit = %v/%v", i, ev.Success, ev.Exit)
		}
		if ev.Cwd != rep.Cwd {
			t.Errorf("execve #%d cwd = %q, want %q", i, ev.Cwd, rep.Cwd)
		}
		if ev.Comm != "true" || !strings.HasSuffix(ev.Exe, "/true") {
			t.Errorf("execve #%d comm/exe = %q/%q", i, ev.Comm, ev.Exe)
		}
		if len(ev.Paths) == 0 || ev.Paths[0].Name != "/bin/true" {
			t.Errorf("execve #%d paths = %+v", i, ev.Paths)
		}
		if !strings.HasPrefix(ev.Proctitle, "/bin/true") {
			t.Errorf("execve #%d proctitle = %q", i, ev.Proctitle)
		}
		if i == 0 && len(ev.ArgsHex) != len(ex.Args) {
			t.Errorf("execve #0: a non-UTF-8 argument must come with args_hex")
		}
		nExecve := 0
		for _, r := range ev.Records {
			if r.Type == "EXECVE" {
				nExecve++
			}
		}
		if i == 1 && nExecve < 2 {
			t.Errorf("execve #1: expected the 401 arguments to span several EXECVE records, got %d", nExecve)
		}
	}

	// connect to 127.0.0.1, ::1 and an abstract unix socket.
	conn := func(what string, ok func(*audit.Sockaddr) bool) {
		t.Helper()
		ev := find("connect "+what, func(ev *audit.Event) bool {
			return ev.Sys == "connect" && pidIs(ev, rep.PID) && ev.Sockaddr != nil && ok(ev.Sockaddr)
		})
		if ev != nil {
			checkProc(t, ev, "connect", rep.PID, 0)
			if ev.Success == nil || !*ev.Success || *ev.Exit != 0 {
				t.Errorf("connect %s: success/exit = %v/%v", what, *ev.Success, *ev.Exit)
			}
		}
	}
	conn("inet", func(s *audit.Sockaddr) bool {
		return s.Family == "inet" && s.Addr == "127.0.0.1" && s.Port != nil && int(*s.Port) == rep.Port4
	})
	if rep.Port6 != 0 {
		conn("inet6", func(s *audit.Sockaddr) bool {
			return s.Family == "inet6" && s.Addr == "::1" && s.Port != nil && int(*s.Port) == rep.Port6
		})
	}
	conn("abstract unix", func(s *audit.Sockaddr) bool {
		return s.Family == "unix" && s.Abstract && s.Path == rep.Abstract
	})

	// files
	hasPath := func(ev *audit.Event, name, nametype string) bool {
		for _, p := range ev.Paths {
			if p.Name == name && (nametype == "" || p.NameType == nametype) {
				return true
			}
		}
		return false
	}
	if ev := find("create", func(ev *audit.Event) bool {
		return ev.Sys == "openat" && pidIs(ev, rep.PID) && hasPath(ev, rep.Created, "CREATE")
	}); ev != nil {
		checkProc(t, ev, "openat", rep.PID, 0)
		if ev.Paths[len(ev.Paths)-1].Mode != "0100644" {
			t.Errorf("created file mode = %q", ev.Paths[len(ev.Paths)-1].Mode)
		}
	}
	find("open for write", func(ev *audit.Event) bool {
		return ev.Sys == "openat" && pidIs(ev, rep.PID) && hasPath(ev, rep.Created, "NORMAL")
	})
	find("rename", func(ev *audit.Event) bool {
		return strings.HasPrefix(ev.Sys, "rename") && pidIs(ev, rep.PID) &&
			hasPath(ev, rep.Created, "DELETE") && hasPath(ev, rep.Renamed, "CREATE")
	})
	find("utimensat", func(ev *audit.Event) bool {
		return ev.Sys == "utimensat" && pidIs(ev, rep.PID) && hasPath(ev, rep.Renamed, "")
	})
	find("unlink", func(ev *audit.Event) bool {
		return strings.HasPrefix(ev.Sys, "unlink") && pidIs(ev, rep.PID) && hasPath(ev, rep.Renamed, "DELETE")
	})

	// fork, and the child's exit status
	find("clone of the shell", func(ev *audit.Event) bool {
		return slices.Contains([]string{"clone", "clone3", "fork", "vfork"}, ev.Sys) && pidIs(ev, rep.PID) &&
			ev.Exit != nil && int(*ev.Exit) == rep.ShPID
	})
	if ev := find("exit_group 7", func(ev *audit.Event) bool { return ev.Sys == "exit_group" && pidIs(ev, rep.ShPID) }); ev != nil {
		if ev.ExitStatus == nil || *ev.ExitStatus != 7 {
			t.Errorf("exit_group status = %v, want 7", ev.ExitStatus)
		}
		if ev.Success != nil || ev.Exit != nil {
			t.Errorf("exit_group has no success/exit in the kernel's record; got %v/%v", ev.Success, ev.Exit)
		}
	}

	// kill
	if ev := find("kill", func(ev *audit.Event) bool { return ev.Sys == "kill" && pidIs(ev, rep.PID) }); ev != nil {
		if ev.TargetPID == nil || int(*ev.TargetPID) != rep.SleepPID || ev.Signal == nil || *ev.Signal != int(syscall.SIGTERM) {
			t.Errorf("kill target/signal = %v/%v, want %d/15", ev.TargetPID, ev.Signal, rep.SleepPID)
		}
		if ev.TargetComm != "sleep" {
			t.Errorf("kill target comm = %q, want sleep (from OBJ_PID)", ev.TargetComm)
		}
	}

	// Every event archived keeps its raw records; none is LOST in a quiet test.
	for _, ev := range evs {
		if ev.Type == "LOST" {
			t.Errorf("unexpected LOST event: %+v", ev)
		}
		if len(ev.Records) == 0 {
			t.Errorf("event %d has no raw records", ev.Index)
		}
	}
	if *update {
		saveCapture(t, "../../testdata/workload.cap", "events of the workload in cmd/auditarch/integration_test.go", mineRaw)
	}
}

func checkProc(t *testing.T, ev *audit.Event, what string, pid, ppid int) {
	t.Helper()
	if ev.PID == nil || int(*ev.PID) != pid {
		t.Errorf("%s pid = %v, want %d", what, ev.PID, pid)
	}
	if ppid != 0 && (ev.PPID == nil || int(*ev.PPID) != ppid) {
		t.Errorf("%s ppid = %v, want %d", what, ev.PPID, ppid)
	}
	if ev.UID == nil || *ev.UID != uint32(os.Getuid()) || ev.EUID == nil || ev.GID == nil || ev.AUID == nil || ev.Ses == nil {
		t.Errorf("%s: missing process ids: uid=%v euid=%v gid=%v auid=%v ses=%v", what, ev.UID, ev.EUID, ev.GID, ev.AUID, ev.Ses)
	}
	if ev.TTY == "" || ev.Comm == "" || ev.Exe == "" || ev.Key == "" || ev.Arch != "x86_64" {
		t.Errorf("%s: tty=%q comm=%q exe=%q key=%q arch=%q", what, ev.TTY, ev.Comm, ev.Exe, ev.Key, ev.Arch)
	}
}

func trunc(args []string) []string {
	out := make([]string, 0, len(args))
	for _, a := range args {
		if len(a) > 40 {
			a = fmt.Sprintf("%s...(%d bytes)", a[:20], len(a))
		}
		out = append(out, a)
	}
	if len(out) > 12 {
		out = append(out[:12], fmt.Sprintf("...(%d args)", len(args)))
	}
	return out
}

func saveCapture(t *testing.T, path, comment string, evs []*audit.RawEvent) {
	t.Helper()
	u, err := exec.Command("uname", "-a").Output()
	if err != nil {
		t.Fatal(err)
	}
	c := &capfile.Capture{Uname: strings.TrimSpace(string(u)), Comment: []string{comment}}
	for _, ev := range evs {
		for _, r := range ev.Records {
			c.Items = append(c.Items, capfile.Item{Record: r})
		}
		if ev.EOE {
			// An event keeps its EOE record as a flag; the kernel's EOE text is the bare stamp, so the
			// record is restored exactly and replay sees the stream as received.
			_, off, err := audit.ParseHeader(ev.Records[0].Text)
			if err == nil {
				c.Items = append(c.Items, capfile.Item{Record: audit.Record{Type: audit.TypeEOE, Text: ev.Records[0].Text[:off]}})
			}
		}
	}
	var buf bytes.Buffer
	if err := capfile.Write(&buf, c); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}
