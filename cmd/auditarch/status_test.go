package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	libaudit "github.com/elastic/go-libaudit/v2"

	"github.com/auditarch/auditarch/archive"
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
