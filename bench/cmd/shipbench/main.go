// Command shipbench is auditarch's shipping benchmark. It measures the time from an audited syscall to its
// event being durable in a remote store on loopback, p50 and p99, at fixed event rates (default 1,000 and
// 10,000 events/s for 10 s each), for:
//
//	auditarch     `auditarch run` shipping to `auditarch store` (two processes, TLS on loopback); an event
//	              is durable when the store has verified and fsynced it (the store's --trace line, written
//	              just before its acknowledgement); receipt latency (a cosigned checkpoint covering the
//	              event, target p99 < 1.5 s) is printed as a note
//	auditd        Debian's auditd (installed auditd.conf, log under the output directory) with its
//	              audisp-remote plugin (package audispd-plugins; installed audisp-remote.conf, managed
//	              format) sending to a second auditd on 127.0.0.1 that only receives (local_events = no)
//	              and writes its log with flush = DATA, so a record in it is on disk (O_DSYNC)
//	auditd-async  the same with the receiver's flush as installed (Debian: incremental_async), so a record
//	              in its log may be in the page cache only: what the defaults give, not durability
//
// The workload is this program run as a paced generator from a private copy of its binary, so that one rule
// (-a always,exit -F arch=b64 -S openat -F exe=COPY -k shipbench) audits exactly its syscalls: event i is
// one openat due at start + i/rate, and carries i in its ignored mode argument, which the kernel logs as a3.
// Each (peer, rate) starts fresh peers, waits until the rule's own CONFIG_CHANGE record has reached the
// store, runs the generator, and then waits until every event has arrived, nothing has arrived for -quiet,
// or -drain has passed; what has not arrived by then is lost.
//
// An event's latency is the time the harness saw the last of its records in the store (auditd: the
// receiver's log, followed with inotify, which fires after each write() returns) minus its audit timestamp
// msg=audit(SEC.MSEC:…), which has millisecond resolution and comes from the kernel's coarse clock (it trails
// the syscall by up to one tick); the same from the generator's own clock is printed beside it as a check.
// p50 and p99 count a lost event as never durable. A peer with a target (auditarch: p99 < 50 ms) is marked
// PASS or FAIL; auditd has none and is only measured.
//
// The machine-wide kernel audit lock is held for the whole run, and the status and rules found are restored
// at the end, also on error or Ctrl-C; every process started is stopped by pid and no audit pid is left
// registered.
//
// Usage, from the module root, as root:
//
//	go run ./bench/cmd/shipbench -out bench-out
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/auditarch/auditarch/bench/internal/harness"
)

// bench is one run's configuration and kernel connection.
type bench struct {
	k          *harness.Kernel
	out        string // absolute output directory
	self       string // this program's binary (the sender's launcher)
	gen        string // the generator: a private copy of self, selected by the rule's exe=
	target     string // the file the generator opens
	rule       string // the one audit rule, auditctl syntax
	rulesFile  string // holding rule
	dur        time.Duration
	backlog    uint32
	wait       uint32
	drainMax   time.Duration
	quiet      time.Duration
	keep       bool
	auditdConf string
}

// newPeer returns the peer called name.
func newPeer(name string) (peer, error) {
	switch name {
	case "auditd":
		return &auditdPeer{label: name, flush: "DATA"}, nil
	case "auditd-async":
		return &auditdPeer{label: name}, nil
	case "auditarch":
		return &auditarchPeer{}, nil
	}
	return nil, fmt.Errorf("unknown peer %q (have auditarch, auditd, auditd-async)", name)
}

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case genSubcommand:
			exit(generate(os.Args[2:]))
		case bindSubcommand:
			exit(bindExec(os.Args[2:]))
		}
	}
	b := &bench{}
	var peers, rates string
	var backlog, wait uint
	flag.StringVar(&b.out, "out", "bench-out", "output directory")
	flag.DurationVar(&b.dur, "d", 10*time.Second, "how long the generator runs at each rate")
	flag.StringVar(&rates, "rates", "1000,10000", "event rates to measure, events/s")
	flag.StringVar(&peers, "peers", "auditarch,auditd,auditd-async", "peers to measure")
	flag.UintVar(&backlog, "backlog", 8192, "kernel backlog_limit for every peer")
	flag.UintVar(&wait, "wait", 60000, "kernel backlog_wait_time (jiffies) for every peer")
	flag.DurationVar(&b.drainMax, "drain", 60*time.Second, "after the generator ends, wait at most this long for events")
	flag.DurationVar(&b.quiet, "quiet", 5*time.Second, "and stop waiting once nothing has arrived for this long")
	flag.BoolVar(&b.keep, "keep", false, "keep the peers' logs")
	flag.StringVar(&b.auditdConf, "auditd-conf", "/etc/audit/auditd.conf", "auditd config to copy for both auditd")
	flag.Parse()
	b.backlog, b.wait = uint32(backlog), uint32(wait)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	exit(b.run(ctx, strings.Split(peers, ","), strings.Split(rates, ",")))
}

func exit(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "shipbench:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func (b *bench) run(ctx context.Context, peerNames, rateList []string) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("needs root (kernel audit control)")
	}
	var ps []peer
	for _, n := range peerNames {
		p, err := newPeer(n)
		if err != nil {
			return err
		}
		ps = append(ps, p)
	}
	var rs []int
	for _, s := range rateList {
		r, err := strconv.Atoi(s)
		if err != nil || r <= 0 {
			return fmt.Errorf("bad rate %q", s)
		}
		rs = append(rs, r)
	}
	if err := b.setup(); err != nil {
		return err
	}
	rep := newReport(b)

	if b.k, err = harness.OpenKernel(ctx, os.Stderr); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, b.k.Close()) }()
	rep.Found = harness.StatusLine(b.k.Found())
	rep.Load = append(rep.Load, harness.LoadAvg())

	failed := 0
	for _, rate := range rs {
		for _, p := range ps {
			fmt.Fprintf(os.Stderr, "%-13s %6d/s ", p.name(), rate)
			res, err := b.measure(ctx, p, rate)
			if err != nil {
				res.Error = strings.ReplaceAll(err.Error(), "\n", "; ")
				failed++
			}
			res.judge()
			rep.Results = append(rep.Results, res)
			if err != nil {
				fmt.Fprintln(os.Stderr, "FAILED:", res.Error)
				if _, bad := errors.AsType[*harness.UncleanError](err); bad || ctx.Err() != nil {
					rep.print(os.Stdout)
					return err
				}
				continue
			}
			fmt.Fprintf(os.Stderr, "sent %d, received %d, p50 %s ms, p99 %s ms\n",
				res.Sent, res.Received, msCell(res.Latency.P50Ms), msCell(res.Latency.P99Ms))
		}
	}
	rep.Load = append(rep.Load, harness.LoadAvg())
	rep.print(os.Stdout)
	if err := rep.write(filepath.Join(b.out, "shipbench.json")); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d measurement(s) failed", failed)
	}
	return nil
}

// setup prepares the output directory, the generator copy, its target file and the rules file.
func (b *bench) setup() (err error) {
	if b.out, err = harness.PrepareOut(b.out); err != nil {
		return err
	}
	bin := filepath.Join(b.out, "bin")
	if b.self, err = os.Executable(); err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	// A copy on a new inode, so the exe= rule matches the generator and not the harness.
	b.gen = filepath.Join(bin, "shipbench-gen")
	if err := harness.CopyFile(b.self, b.gen); err != nil {
		return err
	}
	b.target = filepath.Join(bin, "ship-target")
	if err := os.WriteFile(b.target, []byte("auditarch ship bench\n"), 0o644); err != nil {
		return fmt.Errorf("target file: %w", err)
	}
	b.rule = "-a always,exit -F arch=b64 -S openat -F exe=" + b.gen + " -k " + ruleKey
	b.rulesFile = filepath.Join(b.out, "shipbench.rules")
	if err := os.WriteFile(b.rulesFile, []byte(b.rule+"\n"), 0o640); err != nil {
		return fmt.Errorf("write rules: %w", err)
	}
	return nil
}
