package audit_test

import (
	"bytes"
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/elastic/go-libaudit/v2/rule"
	"github.com/elastic/go-libaudit/v2/rule/flags"
	"github.com/rs/zerolog"

	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/internal/capfile"
	"github.com/auditarch/auditarch/internal/privtest"
)

var update = flag.Bool("update", false, "rewrite testdata captures from the real kernel")

// TestLostMessagesRealKernel stalls the consumer while a workload overflows a tiny kernel backlog with no
// wait time, then checks that every kernel loss becomes LOST events whose counts add up to the kernel's
// lost counter, and that every record received is in exactly one event.
func TestLostMessagesRealKernel(t *testing.T) {
	ctl := privtest.Kernel(t)
	// A copy of the shell of its own: the rule matches its exe only, so no other shell on the machine
	// (go test runs packages and builds in parallel) adds events or losses to the count.
	sys, err := filepath.EvalSymlinks("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(sys)
	if err != nil {
		t.Fatal(err)
	}
	sh := filepath.Join(t.TempDir(), "lostcap-sh")
	if err := os.WriteFile(sh, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	conn, err := audit.Dial(4096) // a small socket buffer fills quickly while the reader is stalled
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Register(); err != nil {
		t.Fatal(err)
	}
	for _, step := range []error{
		ctl.SetBacklogLimit(8, 1),
		ctl.SetBacklogWaitTime(0, 1),
		ctl.SetEnabled(true, 1),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
	r, err := flags.Parse("-a always,exit -F arch=b64 -S openat -F exe=" + sh + " -k lostcap")
	if err != nil {
		t.Fatal(err)
	}
	wire, err := rule.Build(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := ctl.AddRule(wire); err != nil {
		t.Fatal(err)
	}
	var rec capfile.Recorder
	var events []*audit.RawEvent
	release := make(chan struct{})
	stalled := true
	sink := rec.Sink(func(ev *audit.RawEvent) {
		if stalled {
			<-release // the consumer is stuck: the socket fills, the kernel backlog overflows
			stalled = false
		}
		events = append(events, ev.Clone())
	})
	c := &audit.Capture{Conn: conn, Reassembler: audit.NewReassembler(nil), PollInterval: 200 * time.Millisecond,
		Log: zerolog.Nop(), Tap: rec.Tap}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, capfile.SinkFunc(sink)) }()

	// 400 opens of /etc/hostname by the shell, each one audited event (SYSCALL, CWD, PATH, PROCTITLE, EOE).
	wl := exec.Command(sh, "-c", `i=0; while [ $i -lt 400 ]; do : < /etc/hostname; i=$((i+1)); done`)
	if out, err := wl.CombinedOutput(); err != nil {
		t.Fatalf("workload: %v: %s", err, out)
	}
	close(release)
	time.Sleep(1500 * time.Millisecond) // drain, let the lost poll see the counter
	whileCapturing, err := ctl.GetStatus()
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	after, err := ctl.GetStatus()
	if err != nil {
		t.Fatal(err)
	}
	// Once the capture unregisters, the kernel holds records for the next daemon in a queue as small as
	// the backlog limit and counts overflow as lost: those losses are after the capture and may or may
	// not be in its last poll. Everything lost while it was capturing must be.
	// Counted from the capture's own first reading: the machine's other audit records (packages testing
	// in parallel) may overflow the tiny backlog before it.
	kernelLost := uint64(whileCapturing.Lost - c.Baseline)
	kernelLostAtEnd := uint64(after.Lost - c.Baseline)
	if kernelLost == 0 {
		t.Fatalf("the kernel lost nothing (backlog %d, wait 0): the test did not overflow it", after.BacklogLimit)
	}
	var reported, received, inEvents uint64
	for _, it := range rec.Items {
		if it.Lost == 0 {
			received++
		}
	}
	for _, ev := range events {
		if ev.Kind == audit.KindLost && ev.Lost.Reason == audit.LostKernel {
			reported += ev.Lost.Count
		}
		inEvents += uint64(len(ev.Records))
		if ev.Kind == audit.KindEvent && ev.EOE {
			inEvents++ // the EOE record closes the event and is kept as its flag
		}
	}
	if reported < kernelLost || reported > kernelLostAtEnd {
		t.Errorf("LOST events report %d kernel losses; the kernel counted %d while capturing and %d by the end", reported, kernelLost, kernelLostAtEnd)
	}
	if inEvents != received {
		t.Errorf("%d records received but %d in events: something was dropped or duplicated", received, inEvents)
	}
	t.Logf("kernel lost %d; %d records received, %d events", kernelLost, received, len(events))
	if *update {
		saveItems(t, "../testdata/lost.cap", "a stalled consumer, backlog_limit 8, backlog_wait_time 0, 400 audited opens by "+sh+"; records of the workload only", rec.Items, "key=\"lostcap\"")
	}
}

// saveItems writes the items whose serial belongs to an event with a record containing marker, plus
// every lost marker, as a capture file.
func saveItems(t *testing.T, path, comment string, items []capfile.Item, marker string) {
	t.Helper()
	keep := map[uint32]bool{}
	for _, it := range items {
		if it.Lost == 0 && bytes.Contains(it.Text, []byte(marker)) {
			if h, _, err := audit.ParseHeader(it.Text); err == nil {
				keep[h.Serial] = true
			}
		}
	}
	u, _ := exec.Command("uname", "-a").Output()
	c := &capfile.Capture{Uname: strings.TrimSpace(string(u)), Comment: []string{comment}}
	for _, it := range items {
		if it.Lost == 0 {
			h, _, err := audit.ParseHeader(it.Text)
			if err != nil || !keep[h.Serial] {
				continue
			}
		}
		c.Items = append(c.Items, it)
	}
	var buf bytes.Buffer
	if err := capfile.Write(&buf, c); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}
