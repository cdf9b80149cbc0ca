package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/bench/internal/harness"
)

// Where Debian's auditd and audispd-plugins install what the auditd peer copies.
const (
	auditRemoteConf = "/etc/audit/audisp-remote.conf" // read by audisp-remote from this path only
	auRemotePlugin  = "/etc/audit/plugins.d/au-remote.conf"
	auditdBin       = "/usr/sbin/auditd"
)

// bindSubcommand is the hidden first argument that makes this program bind-mount one file over another
// and exec a program, in a mount namespace of its own (the harness starts it with CLONE_NEWNS).
const bindSubcommand = "__bindexec"

// auditdPeer is Debian's auditd shipping with its audisp-remote plugin to a second auditd that only
// receives, both on loopback:
//
//	kernel → sender auditd (registered; logs to send/log as installed) → audisp-remote (managed
//	format, immediate mode) → TCP 127.0.0.1:P → receiver auditd (local_events = no) → recv/log/audit.log
//
// Both run from private copies of the installed configuration. The receiver's log is the store: a record
// is durable when it is in that file, which with flush = DATA auditd opens O_DSYNC.
type auditdPeer struct {
	label string
	// flush is the receiver's flush setting; "" keeps the installed one (incremental_async: not durable).
	flush string

	recv, send *harness.Proc
	cancel     context.CancelFunc // stops the follower
	followed   chan error
	k          *harness.Kernel
	sendLog    string
	qDepth     string // the sender's dispatcher queue size, for the report
	dir        string
	keep       bool
}

func (a *auditdPeer) name() string { return a.label }

func (a *auditdPeer) start(ctx context.Context, b *bench, dir string, seen func(record, time.Time)) error {
	a.dir, a.keep, a.k = dir, b.keep, b.k
	port, err := freePort()
	if err != nil {
		return err
	}

	// The receiver: no kernel connection, a TCP listener, one log file that never rotates (it is followed).
	recvEtc, recvLog := filepath.Join(dir, "recv", "etc"), filepath.Join(dir, "recv", "log", "audit.log")
	set := map[string]string{
		"log_file":            recvLog,
		"local_events":        "no",
		"tcp_listen_port":     strconv.Itoa(port),
		"max_log_file_action": "IGNORE",
		"plugin_dir":          filepath.Join(recvEtc, "plugins.d"),
	}
	if a.flush != "" {
		set["flush"] = a.flush
	}
	if err := writeConf(b.auditdConf, filepath.Join(recvEtc, "auditd.conf"), set); err != nil {
		return err
	}
	if err := errors.Join(os.MkdirAll(filepath.Dir(recvLog), 0o750), os.MkdirAll(set["plugin_dir"], 0o750)); err != nil {
		return fmt.Errorf("receiver dirs: %w", err)
	}
	if a.recv, err = harness.Start(dir, "auditd-recv", harness.ProcOptions{}, auditdBin, "-n", "-c", recvEtc); err != nil {
		return err
	}
	if err := waitFor(ctx, 15*time.Second, a.recv, "receiver auditd listening on port "+strconv.Itoa(port),
		func() bool { return listening(port) }); err != nil {
		return err
	}
	if err := waitFor(ctx, 5*time.Second, a.recv, "receiver log "+recvLog,
		func() bool { _, err := os.Stat(recvLog); return err == nil }); err != nil {
		return err
	}
	connected, once := make(chan struct{}), sync.Once{}
	marker := []byte(`op=add_rule key="` + ruleKey + `"`)
	fctx, cancel := context.WithCancel(context.Background())
	a.cancel, a.followed = cancel, make(chan error, 1)
	go func() {
		a.followed <- follow(fctx, recvLog, func(line []byte, t time.Time) {
			if bytes.Contains(line, marker) {
				once.Do(func() { close(connected) })
			}
			if r, ok := parseRecord(line); ok {
				seen(r, t)
			}
		})
	}()

	// The sender: the installed auditd.conf with its log under dir (rotated files kept, so its events can
	// be counted) and a private plugin directory holding only au-remote, active. audisp-remote reads its
	// configuration from /etc/audit/audisp-remote.conf only, so the sender runs in a mount namespace of
	// its own where a private copy is bind-mounted there.
	sendEtc := filepath.Join(dir, "send", "etc")
	a.sendLog = filepath.Join(dir, "send", "log", "audit.log")
	plugins := filepath.Join(sendEtc, "plugins.d")
	if err := errors.Join(os.MkdirAll(plugins, 0o750), os.MkdirAll(filepath.Dir(a.sendLog), 0o750)); err != nil {
		return fmt.Errorf("sender dirs: %w", err)
	}
	if err := writeConf(b.auditdConf, filepath.Join(sendEtc, "auditd.conf"), map[string]string{
		"log_file":            a.sendLog,
		"max_log_file_action": "KEEP_LOGS",
		"plugin_dir":          plugins,
	}); err != nil {
		return err
	}
	if err := writeConf(auRemotePlugin, filepath.Join(plugins, "au-remote.conf"), map[string]string{"active": "yes"}); err != nil {
		return err
	}
	a.qDepth = cmp.Or(confValue(filepath.Join(sendEtc, "auditd.conf"), "q_depth"), "2000 (default)")
	remoteConf := filepath.Join(sendEtc, "audisp-remote.conf")
	if err := writeConf(auditRemoteConf, remoteConf, map[string]string{
		"remote_server": "127.0.0.1",
		"port":          strconv.Itoa(port),
	}); err != nil {
		return err
	}
	if a.send, err = harness.Start(dir, "auditd-send", harness.ProcOptions{Unshare: syscall.CLONE_NEWNS},
		b.self, bindSubcommand, remoteConf, auditRemoteConf, auditdBin, "-n", "-c", sendEtc); err != nil {
		return err
	}
	if _, err := b.k.WaitPID(ctx, 15*time.Second, func(pid uint32) (bool, error) {
		if a.send.Exited() {
			return false, fmt.Errorf("sender auditd exited before registering: %w", exitReason(a.send))
		}
		return int(pid) == a.send.PID(), nil
	}); err != nil {
		return fmt.Errorf("sender auditd (pid %d) did not register as the audit pid: %w", a.send.PID(), err)
	}
	if err := b.k.AddRule(b.rule); err != nil {
		return err
	}
	// The rule's CONFIG_CHANGE record reaching the receiver's log proves the whole path (audisp-remote
	// connects on the first event it gets).
	select {
	case <-connected:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(15 * time.Second):
		return fmt.Errorf("the rule's CONFIG_CHANGE record did not reach %s within 15s; sender: %s",
			recvLog, a.send.StderrTail())
	}
}

func (a *auditdPeer) stop() ([]string, error) {
	var notes []string
	var errs []error
	if a.send != nil {
		// Deleting the rules first lets the sender drain: its stop then only has its queue to flush.
		if err := a.k.DeleteRules(); err != nil {
			errs = append(errs, err)
		}
		if err := a.send.Stop(20 * time.Second); err != nil {
			errs = append(errs, err)
		}
		a.send = nil
		if n, err := countIndexed(filepath.Dir(a.sendLog)); err != nil {
			errs = append(errs, err)
		} else {
			notes = append(notes, fmt.Sprintf("the sender auditd logged %d workload events itself; any of them "+
				"missing from the receiver were dropped in between: auditd drops events that overflow its "+
				"dispatcher queue (q_depth = %s) and says so only to syslog", n, a.qDepth))
		}
	}
	if a.cancel != nil {
		a.cancel()
		if err := <-a.followed; err != nil {
			errs = append(errs, err)
		}
		a.cancel = nil
	}
	if a.recv != nil {
		if err := a.recv.Stop(20 * time.Second); err != nil {
			errs = append(errs, err)
		}
		a.recv = nil
		if !a.keep {
			errs = append(errs, os.RemoveAll(filepath.Join(a.dir, "recv", "log")), os.RemoveAll(filepath.Join(a.dir, "send", "log")))
		}
	}
	return notes, errors.Join(errs...)
}

// bindExec is the sender's launcher, run in a new mount namespace: it bind-mounts src over dst and execs
// argv, so the registered audit pid is the launched program's.
func bindExec(args []string) error {
	if len(args) < 3 {
		return errors.New("usage: " + bindSubcommand + " SRC DST PROGRAM [ARG...]")
	}
	if err := unix.Mount(args[0], args[1], "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s over %s: %w", args[0], args[1], err)
	}
	return syscall.Exec(args[2], args[2:], os.Environ())
}

// writeConf copies a "key = value" configuration file from src to dst with the given keys set (replaced
// where present, appended otherwise).
func writeConf(src, dst string, set map[string]string) error {
	in, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("read %s: %w", src, err)
	}
	lines := strings.Split(strings.TrimRight(string(in), "\n"), "\n")
	done := map[string]bool{}
	for i, l := range lines {
		k, _, ok := strings.Cut(l, "=")
		k = strings.TrimSpace(k)
		if v, want := set[k]; ok && want && !strings.HasPrefix(k, "#") {
			lines[i], done[k] = k+" = "+v, true
		}
	}
	for k, v := range set {
		if !done[k] {
			lines = append(lines, k+" = "+v)
		}
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	if err := os.WriteFile(dst, []byte(strings.Join(lines, "\n")+"\n"), 0o640); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	return nil
}

// confValue returns the value of key in a "key = value" file, or "".
func confValue(path, key string) string {
	b, _ := os.ReadFile(path)
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// countIndexed counts the workload's SYSCALL records in an auditd log directory, rotated files included.
func countIndexed(dir string) (int64, error) {
	files, err := filepath.Glob(filepath.Join(dir, "audit.log*"))
	if err != nil {
		return 0, fmt.Errorf("list auditd logs: %w", err)
	}
	var n int64
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return 0, fmt.Errorf("read auditd log: %w", err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if r, ok := parseRecord(sc.Bytes()); ok && r.Index >= 0 {
				n++
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return 0, fmt.Errorf("read auditd log: %w", err)
		}
	}
	return n, nil
}

// freePort finds a TCP port free on loopback. auditd listens on every address; nothing else can be asked
// of it in 3.0.9.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// listening reports whether some socket listens on TCP port (IPv4 or IPv6), from /proc/net, without
// connecting (auditd would log and count a connection).
func listening(port int) bool {
	want := fmt.Sprintf(":%04X ", port)
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			fs := strings.Fields(l)
			// sl local_address rem_address st …; st 0A is LISTEN.
			if len(fs) > 3 && strings.HasSuffix(fs[1]+" ", want) && fs[3] == "0A" {
				return true
			}
		}
	}
	return false
}

// waitFor polls cond every 20 ms until it holds, p exits, ctx ends or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, p *harness.Proc, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if p.Exited() {
			return fmt.Errorf("waiting for %s: %s exited: %w", what, p.Name(), exitReason(p))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %s after %v", what, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// exitReason explains why an auditd that has exited did so.
func exitReason(p *harness.Proc) error {
	err := cmp.Or(p.Result(), errors.New("exit status 0: "+p.StderrTail()))
	if ee, ok := errors.AsType[*exec.ExitError](err); ok && ee.ExitCode() == 6 {
		err = fmt.Errorf("%w (auditd: bad configuration; without -f it gives details only to syslog)", err)
	}
	return err
}
