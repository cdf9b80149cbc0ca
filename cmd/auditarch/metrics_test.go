package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/audit/raw"
	"github.com/auditarch/auditarch/forward"
	"github.com/auditarch/auditarch/internal/archivetest"
	"github.com/auditarch/auditarch/internal/privtest"
	"github.com/auditarch/auditarch/internal/shiptest"
	"github.com/auditarch/auditarch/store"
)

// getMetrics returns the text at http://addr/metrics.
func getMetrics(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v\n%s", resp.StatusCode, err, b)
	}
	return string(b)
}

// promtoolCheck runs promtool check metrics on text: names, types, units and help texts pass its lint.
func promtoolCheck(t *testing.T, text string) {
	t.Helper()
	promtool := privtest.Command(t, "promtool") // Debian package prometheus (make deps installs it)
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// metricValue returns the value of the sample line that starts with series ("name{labels}"), or "".
func metricValue(text, series string) string {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// TestMetrics ships an archive (events, a LOST leaf, POLICY leaves) to a store and scrapes the daemon's
// and the store's endpoints: the figures are the run's, and promtool's lint passes on both.
func TestMetrics(t *testing.T) {
	id, pub := archivetest.Identity(t, "metrics.example")
	st := shiptest.StartStore(t, "", store.Config{}, pub)
	dir := filepath.Join(t.TempDir(), "archive")
	w, err := writer.Create(dir, archivetest.FastOptions(id))
	if err != nil {
		t.Fatal(err)
	}
	sh, err := forward.New(forward.Config{Addr: st.Addr, StoreKey: st.Key, Identity: id, Dir: dir, Writer: w, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sh.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for i := 1; i <= 20; i++ {
		now := time.Now()
		w.Append(&audit.RawEvent{Kind: audit.KindEvent, Serial: uint32(i), Sec: now.Unix(), Received: now.UnixNano(), EOE: true,
			Records: []audit.Record{{Type: 1300, Text: []byte("audit(1.000:1): syscall=59")}, {Type: 1309, Text: []byte("audit(1.000:1): argc=1")}}})
	}
	w.Append(&audit.RawEvent{Kind: audit.KindLost, EOE: true, Received: time.Now().UnixNano(), Lost: audit.Lost{Reason: audit.LostKernel, Count: 7}})
	w.Policy(archive.Policy{Action: raw.PolicyActionSignal, Verdict: raw.PolicyVerdictDenied})
	// Closed and shipped to its end (the STOP and the seal): nothing changes between the two scrapes.
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := sh.WaitShipped(wctx, w.Durable()); err != nil {
		t.Fatal(err)
	}

	addr, stop, err := serveMetrics("127.0.0.1:0", &daemonCollector{daemonSources{w: w, ship: sh, now: time.Now}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	text := getMetrics(t, addr)
	for series, want := range map[string]string{
		"auditarch_events_archived_total":                                 "20",
		"auditarch_records_archived_total":                                "40",
		`auditarch_lost_events_total{reason="kernel"}`:                    "7",
		`auditarch_lost_leaves_total{reason="kernel"}`:                    "1",
		`auditarch_lost_events_total{reason="local_drop"}`:                "0",
		`auditarch_policy_leaves_total{action="signal",verdict="denied"}`: "1",
		"auditarch_segments_opened_total":                                 "1",
		"auditarch_ship_lag_leaves":                                       "0",
		"auditarch_archive_pending_leaves":                                "0",
		"auditarch_archive_durable_lag_seconds":                           "0",
		"auditarch_ship_receipt_leaves":                                   metricValue(text, "auditarch_archive_durable_leaves"),
		`auditarch_build_info{version="` + version + `"}`:                 "1",
	} {
		if got := metricValue(text, series); got != want || got == "" {
			t.Errorf("%s = %q, want %q", series, got, want)
		}
	}
	for _, name := range []string{"auditarch_checkpoints_total", "auditarch_last_checkpoint_timestamp_seconds",
		"auditarch_ship_receipt_age_seconds", "auditarch_ship_backlog_bytes", "process_open_fds", "go_goroutines"} {
		if metricValue(text, name) == "" {
			t.Errorf("no %s in\n%s", name, text)
		}
	}
	promtoolCheck(t, text)

	saddr, sstop, err := serveMetrics("127.0.0.1:0", &storeCollector{st.Server}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer sstop()
	stext := getMetrics(t, saddr)
	origin := id.Signer.Name()
	// (Server.Held would wait for the shipper's connection to end.)
	held := metricValue(text, "auditarch_archive_durable_leaves")
	if got := metricValue(stext, `auditarch_store_host_leaves{host="`+origin+`"}`); got != held {
		t.Errorf("store host leaves = %q, want %s\n%s", got, held, stext)
	}
	for _, name := range []string{"auditarch_store_host_bytes", "auditarch_store_host_last_receipt_timestamp_seconds", "auditarch_store_host_segments"} {
		if metricValue(stext, name+`{host="`+origin+`"}`) == "" {
			t.Errorf("no %s for %s in\n%s", name, origin, stext)
		}
	}
	promtoolCheck(t, stext)
	if !bytes.Contains([]byte(stext), []byte("auditarch_store_accept_errors_total 0")) {
		t.Errorf("no store counters in\n%s", stext)
	}
}

// TestMetricsListenLoopback: a metrics address that is not loopback is refused.
func TestMetricsListenLoopback(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.1:9761": true, "[::1]:9761": true, "localhost:9761": true, "": true,
		"0.0.0.0:9761": false, ":9761": false, "192.0.2.1:9761": false, "9761": false} {
		if err := checkMetricsListen(addr); (err == nil) != ok {
			t.Errorf("checkMetricsListen(%q) = %v", addr, err)
		}
	}
}
