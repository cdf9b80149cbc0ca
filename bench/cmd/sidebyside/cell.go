package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/auditarch/auditarch/bench/internal/harness"
	"github.com/auditarch/auditarch/store"
)

// workload is one loop program and the rule that audits exactly its operation.
type workload struct {
	name  string
	argv  []string // loop binary and its arguments, without -d
	rule  string   // the single audit rule, auditctl syntax
	rules string   // path of the rules file holding rule
}

// cell is one measurement: one workload under one consumer, one repetition.
type cell struct {
	Rep      int    `json:"rep"`
	Workload string `json:"workload"`
	Consumer string `json:"consumer"`

	Ops       int64   `json:"ops"`
	OpErrors  int64   `json:"op_errors"`
	Seconds   float64 `json:"seconds"`
	OpsPerSec float64 `json:"ops_per_sec"`

	ConsumerPID     int     `json:"consumer_pid,omitempty"`
	CPUTicks        int64   `json:"consumer_cpu_ticks"`
	CPUPerEvent     float64 `json:"consumer_cpu_us_per_event"`
	KauditdPerEvent float64 `json:"kauditd_cpu_us_per_event"`
	Events          int64   `json:"events_seen"` // SYSCALL records with key "bench"; -1 when unknown
	Rotated         bool    `json:"auditd_log_rotated,omitempty"`
	Lost            uint32  `json:"kernel_lost"`
	OthersCPU       float64 `json:"others_cpu_percent"` // CPU used by unrelated processes during the workload
	WaitJiffies     uint32  `json:"kernel_backlog_wait_jiffies"`

	// DiskBytes is the size of what the consumer wrote (auditd: every file of its log directory, rotated
	// ones included; auditarch: its archive directory); BytesPerEvent divides it by Events.
	DiskBytes     int64   `json:"disk_bytes,omitempty"`
	BytesPerEvent float64 `json:"disk_bytes_per_event,omitempty"`

	Rules           int    `json:"rules_loaded"`
	Enabled         uint32 `json:"enabled"`
	BacklogLimit    uint32 `json:"backlog_limit"`
	BacklogWaitTime uint32 `json:"backlog_wait_time"`

	Notes []string `json:"notes,omitempty"`
	Error string   `json:"error,omitempty"`
}

// loopResult is the line a loop program prints.
type loopResult struct {
	Ops     int64   `json:"ops"`
	Errors  int64   `json:"errors"`
	Seconds float64 `json:"seconds"`
}

// bareCounts is the line the bare reader prints when stopped.
type bareCounts struct {
	Syscalls int64 `json:"syscalls"`
	Keyed    int64 `json:"keyed"`
	ENOBUFS  int64 `json:"enobufs"`
}

// runCell measures workload w under consumer. Whatever happens, the consumer is stopped, the rules are
// deleted and the audit pid is back to 0 when it returns, or the error is a *harness.UncleanError.
func (b *bench) runCell(ctx context.Context, rep int, w workload, consumer string) (c cell, err error) {
	c = cell{Rep: rep, Workload: w.name, Consumer: consumer, Events: -1}
	dir := filepath.Join(b.out, "run", fmt.Sprintf("r%d-%s-%s", rep, w.name, consumer))
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return c, fmt.Errorf("cell dir: %w", err)
	}
	if err := b.k.Quiet(); err != nil {
		return c, harness.Unclean(err)
	}
	if waited, err := b.waitIdle(ctx); err != nil {
		return c, err
	} else if waited != "" {
		c.Notes = append(c.Notes, waited)
	}
	if consumer == "none" {
		if err := b.recordStatus(&c); err != nil {
			return c, err
		}
		return c, b.runWorkload(ctx, dir, w, &c, nil, nil)
	}

	if err := b.k.SetFair(b.backlog, b.wait); err != nil {
		return c, harness.Unclean(err)
	}
	p, err := b.startConsumer(dir, consumer, w)
	if err != nil {
		return c, err
	}
	c.ConsumerPID = p.PID()
	stopped := false
	defer func() {
		if !stopped {
			// Something went wrong: the consumer may be stuck, and while it is registered any audited
			// syscall (even the harness's own rule deletion) can sleep on the full backlog. Stop it first.
			p.Stop(5 * time.Second)
			err = errors.Join(err, b.stopConsumer(p, consumer, &c))
		}
	}()

	if _, err := b.k.WaitPID(ctx, 15*time.Second, func(pid uint32) (bool, error) {
		if p.Exited() {
			return false, fmt.Errorf("%s exited before registering", consumer)
		}
		return int(pid) == p.PID(), nil
	}); err != nil {
		return c, fmt.Errorf("%s (pid %d) did not register as the audit pid: %w", consumer, p.PID(), err)
	}
	if consumer == "auditarch" {
		if err := b.waitRules(ctx, p); err != nil {
			return c, err
		}
	} else if out, err := exec.CommandContext(ctx, "auditctl", "-R", w.rules).CombinedOutput(); err != nil {
		return c, fmt.Errorf("auditctl -R %s: %w: %s", w.rules, err, strings.TrimSpace(string(out)))
	}
	if err := b.k.SetFair(b.backlog, b.wait); err != nil {
		return c, harness.Unclean(err)
	}
	if err := b.recordStatus(&c); err != nil {
		return c, err
	}
	if err := b.drain(ctx, p); err != nil {
		return c, err
	}

	cpu0, err := cpuTicks(p.PID())
	if err != nil {
		return c, err
	}
	k0, _ := cpuTicks(b.kauditd)
	st0, err := b.k.Status()
	if err != nil {
		return c, err
	}
	if err := b.runWorkload(ctx, dir, w, &c, p, func() { p.Stop(5 * time.Second) }); err != nil {
		return c, err
	}
	if err := b.drain(ctx, p); err != nil {
		return c, err
	}
	cpu1, err := cpuTicks(p.PID())
	if err != nil {
		return c, err
	}
	k1, _ := cpuTicks(b.kauditd)
	st1, err := b.k.Status()
	if err != nil {
		return c, err
	}
	c.CPUTicks = cpu1 - cpu0
	c.Lost = st1.Lost - st0.Lost
	c.WaitJiffies = st1.BacklogWaitTimeActual - st0.BacklogWaitTimeActual
	if c.Ops > 0 {
		c.CPUPerEvent = float64(c.CPUTicks) * 1e6 / userHZ / float64(c.Ops)
		c.KauditdPerEvent = float64(k1-k0) * 1e6 / userHZ / float64(c.Ops)
	}

	stopped = true
	if err := b.stopConsumer(p, consumer, &c); err != nil {
		return c, err
	}
	return c, b.countEvents(dir, consumer, p, &c)
}

// ourTicks returns the CPU ticks of the consumer (0 when nil) and of kauditd.
func (b *bench) ourTicks(consumer *harness.Proc) (cons, kauditd int64) {
	if consumer != nil {
		cons, _ = cpuTicks(consumer.PID())
	}
	kauditd, _ = cpuTicks(b.kauditd)
	return cons, kauditd
}

// waitIdle waits up to b.idleWait (and what is left of b.idleBudget for the run) for unrelated processes
// to use less than b.idleMax percent of one CPU, so that a cell is not measured while the machine is busy
// with something else. It returns a note when it had to wait, or when the machine never went idle.
func (b *bench) waitIdle(ctx context.Context) (string, error) {
	begin := time.Now()
	limit := min(b.idleWait, b.idleBudget)
	defer func() { b.idleBudget -= time.Since(begin) }()
	for {
		t0, err := busyTicks()
		if err != nil {
			return "", err
		}
		w0 := time.Now()
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		t1, err := busyTicks()
		if err != nil {
			return "", err
		}
		pct := 100 * float64(t1-t0) / userHZ / time.Since(w0).Seconds()
		waited := time.Since(begin)
		switch {
		case pct < b.idleMax && waited > 2*time.Second:
			return fmt.Sprintf("waited %.0fs for the machine to go idle", waited.Seconds()), nil
		case pct < b.idleMax:
			return "", nil
		case waited >= limit:
			return fmt.Sprintf("machine still busy (%.0f%% of a CPU) after waiting %.0fs", pct, waited.Seconds()), nil
		}
	}
}

// recordStatus notes the kernel settings and rule count the cell runs under.
func (b *bench) recordStatus(c *cell) error {
	st, err := b.k.Status()
	if err != nil {
		return err
	}
	n, err := b.k.RuleCount()
	if err != nil {
		return err
	}
	c.Enabled, c.BacklogLimit, c.BacklogWaitTime, c.Rules = st.Enabled, st.BacklogLimit, st.BacklogWaitTime, n
	return nil
}

func (b *bench) startConsumer(dir, consumer string, w workload) (*harness.Proc, error) {
	switch consumer {
	case "bare":
		return harness.Start(dir, consumer, harness.ProcOptions{}, filepath.Join(b.bin, "barereader"))
	case "auditd":
		conf, err := writeAuditdConf(b.auditdConf, dir)
		if err != nil {
			return nil, err
		}
		return harness.Start(dir, consumer, harness.ProcOptions{}, "auditd", "-n", "-c", conf)
	case "auditarch":
		archive := filepath.Join(dir, "archive")
		// A fresh host identity key per cell, created by the first run (its directory must be 0700).
		key := filepath.Join(dir, "key", "host.key")
		return harness.Start(dir, consumer, harness.ProcOptions{},
			b.auditarch, "run", "--archive", archive, "--rules", w.rules, "--key", key)
	}
	return nil, fmt.Errorf("unknown consumer %q", consumer)
}

// stopConsumer deletes the rules (auditarch removes its own), stops the consumer by pid, unless it has
// stopped already, and checks the kernel let go of it.
func (b *bench) stopConsumer(p *harness.Proc, consumer string, c *cell) error {
	var errs []error
	if consumer != "auditarch" {
		if err := b.k.DeleteRules(); err != nil {
			errs = append(errs, harness.Unclean(err))
		}
	}
	if err := p.Stop(20 * time.Second); err != nil {
		errs = append(errs, err)
	}
	if n, err := b.k.RuleCount(); err != nil {
		errs = append(errs, harness.Unclean(err))
	} else if n > 0 {
		c.Notes = append(c.Notes, fmt.Sprintf("%s left %d rule(s) loaded after exit", consumer, n))
		if err := b.k.DeleteRules(); err != nil {
			errs = append(errs, harness.Unclean(err))
		}
	}
	if _, err := b.k.WaitPID(context.Background(), 5*time.Second, func(pid uint32) (bool, error) {
		return pid == 0, nil
	}); err != nil {
		errs = append(errs, harness.Unclean(fmt.Errorf("after stopping %s: %w", consumer, err)))
	}
	return errors.Join(errs...)
}

// waitRules waits for auditarch to program its rules from the rules file.
func (b *bench) waitRules(ctx context.Context, p *harness.Proc) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		n, err := b.k.RuleCount()
		if err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		if p.Exited() {
			return errors.New("auditarch exited before loading rules")
		}
		if time.Now().After(deadline) {
			return errors.New("auditarch loaded no rules within 15s")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// drain waits until the kernel backlog is empty and the consumer has used no CPU for 300 ms: everything
// the workload caused has been consumed.
func (b *bench) drain(ctx context.Context, p *harness.Proc) error {
	deadline := time.Now().Add(30 * time.Second)
	last, stable := int64(-1), 0
	for stable < 3 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if p.Exited() {
			return errors.New("consumer exited during the run")
		}
		st, err := b.k.Status()
		if err != nil {
			return err
		}
		cpu, err := cpuTicks(p.PID())
		if err != nil {
			return err
		}
		if st.Backlog == 0 && cpu == last {
			stable++
		} else {
			stable = 0
		}
		last = cpu
		if time.Now().After(deadline) {
			return fmt.Errorf("consumer still busy 30s after the workload (backlog %d)", st.Backlog)
		}
	}
	return nil
}

// runWorkload runs the loop program for the cell's duration and records its rate and how much CPU other
// processes used meanwhile (consumer is nil for the none baseline).
//
// An audited task that finds the backlog full sleeps, uninterruptibly, up to backlog_wait_time: if the
// workload overruns, unstick stops the consumer first (the kernel then stops queueing for it), and only
// then is the workload killed.
func (b *bench) runWorkload(ctx context.Context, dir string, w workload, c *cell,
	consumer *harness.Proc, unstick func()) error {
	argv := append(append([]string{}, w.argv...), "-d", b.dur.String())
	busy0, err := busyTicks()
	if err != nil {
		return err
	}
	cons0, k0 := b.ourTicks(consumer)
	// Go's preemption signal can interrupt a blocking connect; the kernel restarts it and audits both
	// attempts. Without it, every workload causes exactly one audited event per operation.
	env := []string{"GODEBUG=asyncpreemptoff=1"}
	p, err := harness.Start(dir, "workload", harness.ProcOptions{Env: env}, argv...)
	if err != nil {
		return err
	}
	switch err := p.Await(ctx, b.dur+20*time.Second, unstick); {
	case errors.Is(err, harness.ErrOverran):
		return fmt.Errorf("workload %s stalled 20s past its end: the consumer stopped reading", w.name)
	case err != nil:
		return err
	}
	if err := p.Result(); err != nil {
		return err
	}
	busy1, err := busyTicks()
	if err != nil {
		return err
	}
	cons1, k1 := b.ourTicks(consumer)
	loop := int64(p.CPUTime()) * userHZ / 1e9
	others := max((busy1-busy0)-loop-(cons1-cons0)-(k1-k0), 0)
	out, err := p.Stdout()
	if err != nil {
		return err
	}
	var r loopResult
	if err := json.Unmarshal(out, &r); err != nil {
		return fmt.Errorf("parse workload output %q: %w", out, err)
	}
	c.Ops, c.OpErrors, c.Seconds = r.Ops, r.Errors, r.Seconds
	if r.Seconds > 0 {
		c.OpsPerSec = float64(r.Ops) / r.Seconds
		c.OthersCPU = 100 * float64(others) / userHZ / r.Seconds
	}
	if r.Errors > 0 {
		c.Notes = append(c.Notes, fmt.Sprintf("%d of %d operations failed", r.Errors, r.Ops))
	}
	return nil
}

// countEvents records how many audited syscalls the consumer saw, where it can tell, and removes the
// consumer's output unless -keep.
func (b *bench) countEvents(dir, consumer string, p *harness.Proc, c *cell) error {
	switch consumer {
	case "bare":
		out, err := p.Stdout()
		if err != nil {
			return err
		}
		var n bareCounts
		if err := json.Unmarshal(out, &n); err != nil {
			return fmt.Errorf("parse bare reader output %q: %w", out, err)
		}
		c.Events = n.Keyed
		if n.ENOBUFS > 0 {
			c.Notes = append(c.Notes, fmt.Sprintf("bare reader saw ENOBUFS %d times", n.ENOBUFS))
		}
	case "auditd":
		n, rotated, err := countLogged(filepath.Join(dir, "log"))
		if err != nil {
			return err
		}
		c.Events, c.Rotated = n, rotated
		if c.DiskBytes, err = dirBytes(filepath.Join(dir, "log")); err != nil {
			return err
		}
	case "auditarch":
		n, err := b.countArchived(filepath.Join(dir, "archive"))
		if err != nil {
			return err
		}
		c.Events = n
		if c.DiskBytes, err = dirBytes(filepath.Join(dir, "archive")); err != nil {
			return err
		}
	}
	if c.DiskBytes > 0 && c.Events > 0 {
		c.BytesPerEvent = float64(c.DiskBytes) / float64(c.Events)
	}
	if b.keep {
		return nil
	}
	// auditarch ships to its embedded store beside the archive, which makes sealed segments immutable.
	store.ClearImmutable(filepath.Join(dir, "store"))
	return errors.Join(os.RemoveAll(filepath.Join(dir, "log")), os.RemoveAll(filepath.Join(dir, "archive")), os.RemoveAll(filepath.Join(dir, "store")))
}

// dirBytes is the size of the regular files in dir and below.
func dirBytes(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", dir, err)
	}
	return n, nil
}

// countArchived counts the syscall events with the bench key that auditarch archived, through its show
// command.
func (b *bench) countArchived(dir string) (int64, error) {
	cmd := exec.Command(b.auditarch, "show", "--json", dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, fmt.Errorf("auditarch show: %w", err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("auditarch show: %w", err)
	}
	var n int64
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		// The rule's add and remove CONFIG_CHANGE events carry the key too: count syscalls only.
		if l := sc.Text(); strings.Contains(l, `"key":"bench"`) && strings.Contains(l, `"record_type":"SYSCALL"`) {
			n++
		}
	}
	if err := errors.Join(sc.Err(), cmd.Wait()); err != nil {
		return 0, fmt.Errorf("auditarch show %s: %w: %s", dir, err, strings.TrimSpace(stderr.String()))
	}
	return n, nil
}

// writeAuditdConf copies auditd.conf into dir/etc with log_file pointing into dir/log, everything else as
// installed, and returns the config directory for auditd -c.
func writeAuditdConf(src, dir string) (string, error) {
	in, err := os.ReadFile(src)
	if err != nil {
		return "", fmt.Errorf("read auditd config: %w", err)
	}
	etc, logDir := filepath.Join(dir, "etc"), filepath.Join(dir, "log")
	if err := errors.Join(os.MkdirAll(etc, 0o750), os.MkdirAll(logDir, 0o750)); err != nil {
		return "", fmt.Errorf("auditd dirs: %w", err)
	}
	logLine := "log_file = " + filepath.Join(logDir, "audit.log")
	lines := strings.Split(string(in), "\n")
	found := false
	for i, l := range lines {
		if k, _, ok := strings.Cut(l, "="); ok && strings.TrimSpace(k) == "log_file" {
			lines[i], found = logLine, true
		}
	}
	if !found {
		lines = append(lines, logLine)
	}
	if err := os.WriteFile(filepath.Join(etc, "auditd.conf"), []byte(strings.Join(lines, "\n")), 0o640); err != nil {
		return "", fmt.Errorf("write auditd config: %w", err)
	}
	return etc, nil
}

// countLogged counts SYSCALL records with the bench key in an auditd log directory and reports whether it
// rotated.
func countLogged(dir string) (n int64, rotated bool, err error) {
	files, err := filepath.Glob(filepath.Join(dir, "audit.log*"))
	if err != nil {
		return 0, false, fmt.Errorf("list auditd logs: %w", err)
	}
	for _, name := range files {
		rotated = rotated || name != filepath.Join(dir, "audit.log")
		f, err := os.Open(name)
		if err != nil {
			return 0, false, fmt.Errorf("read auditd log: %w", err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if l := sc.Text(); strings.HasPrefix(l, "type=SYSCALL ") && strings.Contains(l, ` key="bench"`) {
				n++
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return 0, false, fmt.Errorf("read auditd log: %w", err)
		}
	}
	return n, rotated, nil
}
