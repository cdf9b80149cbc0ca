// Command sidebyside is auditarch's side-by-side benchmark. In one run, under the same kernel rules and
// settings, it measures how fast an audited workload runs and how much CPU the consumer of the audit events
// spends per event, for:
//
//	none       no rules, no consumer (the workload's own speed)
//	bare       bench/cmd/barereader: go-libaudit Receive loop that only counts (the floor)
//	auditd     Debian's auditd with its installed auditd.conf, log_file moved into the output directory
//	auditarch  the project's daemon (bench-out/auditarch run --archive DIR --rules FILE --key FILE, with a
//	           fresh identity key per cell), when it builds
//
// Workloads are bench/cmd/loop built to one path each (openloop, connectloop, execloop), so one rule per
// workload audits exactly one event per operation. Each cell (workload × consumer) starts a fresh consumer,
// loads the rule, runs the loop for -d, waits until the consumer has drained, and stops the consumer;
// cells are interleaved over -reps repetitions and the best ops/s is reported. CPU per event is the
// consumer's utime+stime over the run and drain, divided by the loop's operation count. Bytes per event
// on disk is the size of what the consumer wrote (auditd: its whole log directory, rotated files included;
// auditarch: its archive directory) divided by the events it logged.
//
// The machine-wide kernel audit lock is held for the whole run, and the status and rules found are
// restored at the end, also on error or Ctrl-C. Before each cell the harness waits (within limits) for
// other processes to leave the CPUs alone, and it reports how much CPU they used during each cell.
//
// Usage, from the module root, as root:
//
//	go run ./bench/cmd/sidebyside -out bench-out
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/auditarch/auditarch/bench/internal/harness"
)

// bench is one run's configuration and kernel connection.
type bench struct {
	k          *harness.Kernel
	root       string // module root
	out        string // absolute output directory
	bin        string // out/bin: workloads, bare reader
	dur        time.Duration
	reps       int
	backlog    uint32
	wait       uint32
	keep       bool
	idleMax    float64       // percent of one CPU others may use before a cell starts
	idleWait   time.Duration // how long to wait for that, per cell
	idleBudget time.Duration // and in all
	auditarch  string        // binary, or "" when skipped
	auditdConf string
	kauditd    int
}

func main() {
	b := &bench{}
	var workloads, consumers string
	var backlog, wait uint
	flag.StringVar(&b.out, "out", "bench-out", "output directory")
	flag.DurationVar(&b.dur, "d", 5*time.Second, "duration of each measurement")
	flag.IntVar(&b.reps, "reps", 2, "repetitions of each cell; the table shows the one with the best ops/s")
	flag.UintVar(&backlog, "backlog", 8192, "kernel backlog_limit for every consumer")
	flag.UintVar(&wait, "wait", 60000, "kernel backlog_wait_time (jiffies) for every consumer")
	flag.StringVar(&workloads, "workloads", "open,connect,exec", "workloads to run")
	flag.StringVar(&consumers, "consumers", "none,bare,auditd,auditarch", "consumers to compare")
	flag.StringVar(&b.auditarch, "auditarch", "", "auditarch binary to use instead of building ./cmd/auditarch")
	flag.StringVar(&b.auditdConf, "auditd-conf", "/etc/audit/auditd.conf", "auditd config to copy (log_file is replaced)")
	flag.BoolVar(&b.keep, "keep", false, "keep auditd logs and auditarch archives")
	flag.Float64Var(&b.idleMax, "idle", 25, "before each cell, wait until other processes use less than this % of one CPU")
	flag.DurationVar(&b.idleWait, "idle-wait", 20*time.Second, "how long to wait for that before measuring anyway")
	flag.DurationVar(&b.idleBudget, "idle-budget", 90*time.Second, "how long to wait for idle in all, per run")
	flag.Parse()
	b.backlog, b.wait = uint32(backlog), uint32(wait)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := b.run(ctx, strings.Split(workloads, ","), strings.Split(consumers, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "sidebyside:", err)
		os.Exit(1)
	}
}

func (b *bench) run(ctx context.Context, workloadNames, consumers []string) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("needs root (kernel audit control)")
	}
	if b.out, err = harness.PrepareOut(b.out); err != nil {
		return err
	}
	b.bin = filepath.Join(b.out, "bin")
	if b.root, err = moduleRoot(); err != nil {
		return err
	}
	rep := newReport(b)
	ws, err := b.build(workloadNames)
	if err != nil {
		return err
	}
	for _, w := range ws {
		rep.Rules[w.name] = w.rule
	}
	if slices.Contains(consumers, "auditarch") {
		if reason := b.buildAuditarch(); reason != "" {
			rep.Skipped["auditarch"] = reason
			consumers = slices.DeleteFunc(consumers, func(c string) bool { return c == "auditarch" })
			fmt.Fprintln(os.Stderr, "auditarch column skipped:", reason)
		}
	}
	for _, c := range consumers {
		if c != "none" && c != "bare" && c != "auditd" && c != "auditarch" {
			return fmt.Errorf("unknown consumer %q", c)
		}
	}

	if b.k, err = harness.OpenKernel(ctx, os.Stderr); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, b.k.Close()) }()
	rep.Found = harness.StatusLine(b.k.Found())
	if b.kauditd = kauditdPID(); b.kauditd == 0 {
		return errors.New("kauditd kernel thread not found")
	}

	rep.Load = append(rep.Load, harness.LoadAvg())
	// A consumer that fails a cell (with the kernel state restored) keeps being measured elsewhere, until
	// it has failed maxFailures cells.
	const maxFailures = 2
	failures := map[string]int{}
	for r := 1; r <= b.reps; r++ {
		for _, w := range ws {
			for _, consumer := range consumers {
				if failures[consumer] >= maxFailures {
					continue
				}
				fmt.Fprintf(os.Stderr, "rep %d %-8s %-9s ", r, w.name, consumer)
				c, err := b.runCell(ctx, r, w, consumer)
				if err != nil {
					c.Error = strings.ReplaceAll(err.Error(), "\n", "; ")
					rep.Cells = append(rep.Cells, c)
					fmt.Fprintln(os.Stderr, "FAILED:", c.Error)
					if _, bad := errors.AsType[*harness.UncleanError](err); bad || ctx.Err() != nil {
						return err
					}
					if failures[consumer]++; failures[consumer] == maxFailures {
						rep.Skipped[consumer] = fmt.Sprintf("dropped after %d failed cells, the last: %s", maxFailures, c.Error)
					}
					continue
				}
				rep.Cells = append(rep.Cells, c)
				fmt.Fprintf(os.Stderr, "%10.0f ops/s  %6.2f µs/event  lost %d  others %3.0f%%CPU\n",
					c.OpsPerSec, c.CPUPerEvent, c.Lost, c.OthersCPU)
			}
		}
	}
	rep.Load = append(rep.Load, harness.LoadAvg())
	rep.summarise(ws, consumers)
	rep.print(os.Stdout)
	return rep.write(filepath.Join(b.out, "sidebyside.json"))
}

// build compiles the loop workloads (one binary per workload), the bare reader and a private copy of
// /bin/true, and writes one rules file per workload.
func (b *bench) build(names []string) ([]workload, error) {
	if err := b.goBuild(filepath.Join(b.bin, "barereader"), "./bench/cmd/barereader"); err != nil {
		return nil, err
	}
	target := filepath.Join(b.bin, "open-target")
	if err := os.WriteFile(target, []byte("auditarch bench\n"), 0o644); err != nil {
		return nil, fmt.Errorf("open target: %w", err)
	}
	truePath := filepath.Join(b.bin, "true")
	if err := harness.CopyFile("/bin/true", truePath); err != nil {
		return nil, err
	}
	rulesDir := filepath.Join(b.out, "rules")
	if err := os.MkdirAll(rulesDir, 0o750); err != nil {
		return nil, fmt.Errorf("rules dir: %w", err)
	}
	var ws []workload
	for _, name := range names {
		loop := filepath.Join(b.bin, name+"loop")
		w := workload{name: name, argv: []string{loop, "-op", name}, rules: filepath.Join(rulesDir, name+".rules")}
		switch name {
		case "open":
			w.argv = append(w.argv, "-file", target)
			w.rule = "-a always,exit -F arch=b64 -S openat -F exe=" + loop + " -k bench"
		case "connect":
			w.rule = "-a always,exit -F arch=b64 -S connect -F exe=" + loop + " -k bench"
		case "exec":
			// The exe filter is evaluated at syscall exit, when the task already runs the new program: a
			// private copy of true selects exactly the successful execve of each iteration, and nothing else
			// on the machine that runs /bin/true.
			w.argv = append(w.argv, "-exe", truePath)
			w.rule = "-a always,exit -F arch=b64 -S execve -F exe=" + truePath + " -k bench"
		default:
			return nil, fmt.Errorf("unknown workload %q", name)
		}
		if err := b.goBuild(loop, "./bench/cmd/loop"); err != nil {
			return nil, err
		}
		if err := os.WriteFile(w.rules, []byte(w.rule+"\n"), 0o640); err != nil {
			return nil, fmt.Errorf("write rules: %w", err)
		}
		ws = append(ws, w)
	}
	return ws, nil
}

// buildAuditarch builds ./cmd/auditarch into the output directory unless -auditarch names a binary. It
// returns why the column is skipped, or "".
func (b *bench) buildAuditarch() string {
	if b.auditarch != "" {
		if _, err := os.Stat(b.auditarch); err != nil {
			return err.Error()
		}
		return ""
	}
	srcs, _ := filepath.Glob(filepath.Join(b.root, "cmd", "auditarch", "*.go"))
	if len(srcs) == 0 {
		return "./cmd/auditarch has no Go files yet"
	}
	bin := filepath.Join(b.out, "auditarch")
	if err := b.goBuild(bin, "./cmd/auditarch"); err != nil {
		return err.Error()
	}
	b.auditarch = bin
	return ""
}

func (b *bench) goBuild(out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = b.root
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w: %s", pkg, err, strings.TrimSpace(string(msg)))
	}
	return nil
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("run from inside the auditarch module (go env GOMOD: %q): %w", gomod, err)
	}
	return filepath.Dir(gomod), nil
}
