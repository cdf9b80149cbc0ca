package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	libaudit "github.com/elastic/go-libaudit/v2"
	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/internal/privtest"
	"github.com/auditarch/auditarch/policy/freeze"
)

var updateStatus = flag.Bool("update-status", false, "rewrite testdata/status/*.golden")

// statusNow is the golden tests' clock.
var statusNow = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

var statusLimitsDefault = statusLimits{Heartbeat: archive.DefaultHeartbeat, Grace: archive.DefaultGrace, MaxReceiptAge: time.Minute, MaxLag: 100_000}

// healthyFacts: a daemon that has run for two hours, the kernel auditing for it with the configured rules,
// a checkpoint 0.4 s old, the store one block behind, a sink 12 leaves behind, protection in detect mode.
func healthyFacts() statusFacts {
	rules := []string{"-a always,exit -F arch=b64 -S execve -F key=exec", "-w /etc/shadow -p wa -k identity"}
	return statusFacts{
		Now: statusNow, Archive: "/var/lib/auditarch", Limits: statusLimitsDefault,
		Running: true, PID: 4242, Start: &archive.Start{Version: "auditarch 0.3.0-dev", PID: 4242}, StartTime: statusNow.Add(-2*time.Hour - 3*time.Minute),
		Kernel:      &libaudit.AuditStatus{Enabled: 1, PID: 4242, Backlog: 3, BacklogLimit: 8192, Lost: 17},
		KernelRules: rules, ConfiguredRules: rules,
		Checkpoint:  &checkpointFact{Size: 1_204_331, Time: statusNow.Add(-400 * time.Millisecond), Segment: "seg-00000000000001200000-20260314T150000Z.aseg"},
		Receipt:     &receiptFact{Size: 1_204_329, Time: statusNow.Add(-time.Second), Verified: true},
		Consumers:   []consumerFact{{Name: "sink siem", Index: 1_204_319}},
		ProtectMode: ProtectDetect, Pins: "/sys/fs/bpf/auditarch", Pinned: []string{"events", "protected", "signal_generate"},
	}
}

// attentionFacts: everything that needs attention at once.
func attentionFacts() statusFacts {
	f := healthyFacts()
	f.Kernel = &libaudit.AuditStatus{Enabled: 0, PID: 0, Backlog: 0, BacklogLimit: 64, Lost: 90210}
	f.KernelRules = f.KernelRules[:1]
	f.Checkpoint.Time = statusNow.Add(-47 * time.Second)
	f.Receipt = &receiptFact{Size: 1_000_000, Time: statusNow.Add(-12*time.Minute - 5*time.Second)}
	f.Consumers = append(f.Consumers, consumerFact{Name: "sink archive-copy", Index: 3})
	f.Frozen = []freeze.Frozen{{Session: 3141, Pids: []int{3141, 3150}, At: statusNow.Add(-5 * time.Minute)}}
	return f
}

// stoppedFacts: no daemon, no kernel access (not root), an archive that ended an hour ago.
func stoppedFacts() statusFacts {
	f := healthyFacts()
	f.Running, f.PID = false, 0
	f.Kernel, f.KernelErr = nil, "operation not permitted (status needs root for the kernel's audit status)"
	f.KernelRules, f.ConfiguredRules, f.RulesErr = nil, nil, "the kernel's rules cannot be read"
	f.Checkpoint.Time, f.Receipt.Time, f.Receipt.Size = statusNow.Add(-time.Hour), statusNow.Add(-time.Hour), f.Checkpoint.Size
	f.Consumers, f.ProtectMode, f.Pinned = nil, ProtectOff, nil
	return f
}

// TestStatusGolden renders the status report of fixed facts, as text and JSON, against
// testdata/status/*.golden (go test -run TestStatusGolden -update-status rewrites them).
func TestStatusGolden(t *testing.T) {
	for _, c := range []struct {
		name      string
		facts     statusFacts
		attention int
	}{{"healthy", healthyFacts(), 0}, {"attention", attentionFacts(), 8}, {"stopped", stoppedFacts(), 2}} {
		t.Run(c.name, func(t *testing.T) {
			rep := buildStatus(c.facts)
			var got bytes.Buffer
			rep.WriteText(&got)
			got.WriteString("\n--- json\n")
			enc := json.NewEncoder(&got)
			enc.SetIndent("", "  ")
			if err := enc.Encode(rep); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", "status", c.name+".golden")
			if *updateStatus {
				if err := os.WriteFile(path, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("status %s differs from %s:\n%s", c.name, path, got.String())
			}
			if len(rep.Attention) != c.attention {
				t.Errorf("%d things need attention, want %d: %q", len(rep.Attention), c.attention, rep.Attention)
			}
		})
	}
}

// TestStatusAndMetricsOfRunningDaemon runs the real daemon (confined, embedded store) with its metrics
// endpoint on: status reports it running with the configured rules, a fresh checkpoint and a verified
// receipt, and exits 0; the endpoint serves the kernel's status and the archive's figures (promtool
// lints them). Once the daemon is stopped, status exits 3 and says it is not running.
func TestStatusAndMetricsOfRunningDaemon(t *testing.T) {
	ctl := privtest.Kernel(t)
	privtest.Command(t, "promtool") // before the daemon: without it, this test fails (or skips) at once
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	base := t.TempDir()
	dir, cfgFile := filepath.Join(base, "archive"), filepath.Join(base, "auditarch.yaml")
	if err := os.WriteFile(cfgFile, []byte("metrics:\n  listen: "+addr+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, stderr := daemonProcess(t, ctl, dir, filepath.Join(base, "keys"), "--config", cfgFile)
	status := func() (int, statusReport, string) {
		t.Helper()
		var out, errOut bytes.Buffer
		code := Main([]string{"status", "--json", "--config", cfgFile, "--archive", dir}, &out, &errOut)
		var rep statusReport
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatalf("status --json: %v\n%s%s", err, out.String(), errOut.String())
		}
		return code, rep, out.String() + errOut.String()
	}
	var code int
	var rep statusReport
	var out string
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		code, rep, out = status()
		if code == 0 || time.Now().After(deadline) {
			break
		}
	}
	if code != 0 {
		t.Fatalf("status of a running daemon: exit %d\n%s\ndaemon: %s", code, out, stderr.String())
	}
	if !rep.Daemon.Running || rep.Daemon.PID != cmd.Process.Pid || rep.Daemon.Version != version ||
		rep.Kernel.PID != uint32(cmd.Process.Pid) || !rep.Rules.Match || rep.Rules.Loaded == 0 ||
		rep.Checkpoint.Index == 0 || !rep.Store.Verified || rep.Store.ReceiptLeaves == 0 {
		t.Errorf("status of a running daemon:\n%s", out)
	}
	var text bytes.Buffer
	if code := Main([]string{"status", "--config", cfgFile, "--archive", dir}, &text, &text); code != 0 || !strings.Contains(text.String(), "all well") {
		t.Errorf("status (text): exit %d\n%s", code, text.String())
	}

	// The kernel's status is polled every lost_poll and events are counted per durable block: wait (up
	// to 10 s) for the first of each before judging the figures.
	metrics := getMetrics(t, addr)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if v := metricValue(metrics, "auditarch_events_archived_total"); metricValue(metrics, "auditarch_kernel_enabled") != "" && v != "" && v != "0" {
			break
		}
		metrics = getMetrics(t, addr)
	}
	for series, want := range map[string]string{"auditarch_kernel_enabled": "1", "auditarch_ship_connected": "1"} {
		if got := metricValue(metrics, series); got != want {
			t.Errorf("%s = %q, want %q", series, got, want)
		}
	}
	for _, name := range []string{"auditarch_events_archived_total", "auditarch_ship_receipt_leaves", "auditarch_checkpoints_total", "auditarch_kernel_backlog_limit"} {
		if v := metricValue(metrics, name); v == "" || v == "0" {
			t.Errorf("%s = %q, want more than 0", name, v)
		}
	}
	promtoolCheck(t, metrics)

	if err := cmd.Process.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("daemon exit: %v\n%s", err, stderr.String())
	}
	code, rep, out = status()
	if code != 3 || rep.Daemon.Running || len(rep.Attention) == 0 || !strings.Contains(rep.Attention[0], "not running") {
		t.Errorf("status of a stopped daemon: exit %d, want 3 and not running first\n%s", code, out)
	}
}
