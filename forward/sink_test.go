package forward_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/forward"
	"github.com/auditarch/auditarch/forward/ecs"
	"github.com/auditarch/auditarch/internal/archivetest"
	"github.com/auditarch/auditarch/internal/peers"
)

// exported returns the indexes of the leaves of the archive in dir that sinks forward.
func exported(t *testing.T, dir string) map[uint64]bool {
	t.Helper()
	r, err := archive.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64]bool{}
	for {
		l, i, err := r.NextLeaf()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ecs.Exported(l.Kind) {
			want[i] = true
		}
	}
	return want
}

var leafRE = regexp.MustCompile(`"leaf":(\d+)[,}]`)

// received counts the leaf ids in files (each line one message holding "leaf":N in its ECS JSON), of
// the lines that contain only ("" for all).
func received(t *testing.T, only string, files ...string) map[uint64]int {
	t.Helper()
	got := map[uint64]int{}
	for _, f := range files {
		fh, err := os.Open(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if only != "" && !strings.Contains(sc.Text(), only) {
				continue
			}
			m := leafRE.FindSubmatch(sc.Bytes())
			if m == nil {
				t.Errorf("%s: line without a leaf id: %.200s", f, sc.Text())
				continue
			}
			n, _ := strconv.ParseUint(string(m[1]), 10, 64)
			got[n]++
		}
		fh.Close()
	}
	return got
}

// check reports missing ids as errors and returns the number of duplicates.
func check(t *testing.T, want map[uint64]bool, got map[uint64]int) int {
	t.Helper()
	dups, missing := 0, 0
	for i := range want {
		if got[i] == 0 {
			missing++
			if missing <= 5 {
				t.Errorf("leaf %d never arrived", i)
			}
		}
	}
	for i, n := range got {
		if !want[i] {
			t.Errorf("leaf %d arrived but is not an exported leaf of the archive", i)
		}
		dups += n - 1
	}
	if missing > 0 {
		t.Errorf("%d of %d leaves missing", missing, len(want))
	}
	return dups
}

func runSink(t *testing.T, s *forward.Sink) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("sink Run: %v", err)
		}
	}
}

func waitCommitted(t *testing.T, s *forward.Sink, size uint64, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for s.Status().Committed.Index < size {
		if time.Now().After(deadline) {
			t.Fatalf("sink committed %d of %d leaves in %v: %+v", s.Status().Committed.Index, size, d, s.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testLog(t *testing.T) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
}

// TestFileSink: every exported leaf reaches the rotated files exactly once; a restarted sink resumes at
// its cursor and sends nothing again; a filter on syscalls keeps LOST/START/STOP leaves.
func TestFileSink(t *testing.T) {
	id, _ := archivetest.Keys(t, "file.example/host")
	dir := filepath.Join(t.TempDir(), "arch")
	archivetest.Write(t, dir, archivetest.FastOptions(id), 400, 0)
	want := exported(t, dir)
	out := filepath.Join(t.TempDir(), "out", "events.jsonl")
	cfg := forward.SinkConfig{Name: "file", Type: forward.SinkFile, Address: out, Batch: 37, MaxSize: 32 << 10, Keep: 1000}
	opts := forward.SinkOptions{Dir: dir, Origin: "file.example/host", Log: testLog(t)}
	s, err := forward.NewSink(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	stop := runSink(t, s)
	var last uint64
	for i := range want {
		last = max(last, i+1)
	}
	waitCommitted(t, s, last, 10*time.Second)
	stop()
	files, _ := filepath.Glob(out + "*")
	if len(files) < 3 {
		t.Errorf("%d files: the sink did not rotate at 32 KiB", len(files))
	}
	if d := check(t, want, received(t, "", files...)); d != 0 {
		t.Errorf("%d duplicates without any failure", d)
	}
	cur, err := archive.LoadCursor(filepath.Join(dir, "cursors", "sink-file.json"))
	if err != nil || cur.Index < last {
		t.Fatalf("cursor %+v, %v: want index at least %d", cur, err, last)
	}

	// A restart resumes at the cursor: nothing is sent again.
	s, _ = forward.NewSink(cfg, opts)
	stop = runSink(t, s)
	time.Sleep(300 * time.Millisecond)
	stop()
	if st := s.Status(); st.Sent != 0 {
		t.Errorf("restarted sink sent %d messages again", st.Sent)
	}

	// A syscall filter: no execve of the archive passes "connect", the control leaves do.
	cfg.Name, cfg.Address, cfg.Filter.Syscalls = "filtered", out+"-filtered", []string{"connect"}
	s, _ = forward.NewSink(cfg, opts)
	stop = runSink(t, s)
	waitCommitted(t, s, last, 10*time.Second)
	stop()
	got := received(t, "", out+"-filtered")
	if len(got) == 0 || len(got) >= len(want)/2 {
		t.Errorf("filtered sink got %d leaves of %d", len(got), len(want))
	}
}

// loadEvents appends n events to a running writer over about d.
func loadEvents(w *writer.Writer, n int, d time.Duration) {
	for i := 0; i < n; i++ {
		w.Append(archivetest.Event(uint32(i + 1)))
		if i%50 == 49 {
			time.Sleep(d / time.Duration(n/50))
		}
	}
}

// TestSinksRsyslogKilled runs a syslog-over-TLS sink and a RELP sink to a real rsyslogd while events are
// archived, kills rsyslogd (SIGKILL) twice under load and restarts it: every exported leaf id arrives
// through each transport; duplicates (resends after the kill) are counted.
func TestSinksRsyslogKilled(t *testing.T) {
	rs := peers.StartRsyslog(t)
	id, _ := archivetest.Keys(t, "rsyslog.example/host")
	dir := filepath.Join(t.TempDir(), "arch")
	w, err := writer.Create(dir, archivetest.FastOptions(id))
	if err != nil {
		t.Fatal(err)
	}
	opts := forward.SinkOptions{Dir: dir, Source: w, Origin: "rsyslog.example/host", Log: testLog(t), MaxBackoff: 200 * time.Millisecond}
	tlsOpts, relpOpts := opts, opts
	tlsOpts.Host, relpOpts.Host = ecs.Host{Name: "viatls"}, ecs.Host{Name: "viarelp"}
	tlsSink, err := forward.NewSink(forward.SinkConfig{Name: "tls", Type: forward.SinkSyslogTLS, Address: rs.TLSAddr,
		TLS: forward.TLSConfig{CA: rs.CA}, Batch: 200, Settle: time.Second}, tlsOpts)
	if err != nil {
		t.Fatal(err)
	}
	relpSink, err := forward.NewSink(forward.SinkConfig{Name: "relp", Type: forward.SinkRELP, Address: rs.RELPAddr, Batch: 128}, relpOpts)
	if err != nil {
		t.Fatal(err)
	}
	stopTLS, stopRELP := runSink(t, tlsSink), runSink(t, relpSink)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); loadEvents(w, 6000, 4*time.Second) }()
	for k := 0; k < 2; k++ {
		time.Sleep(1200 * time.Millisecond)
		rs.Kill()
		time.Sleep(300 * time.Millisecond)
		rs.Start()
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	size := w.Durable().Size
	waitCommitted(t, tlsSink, size, 30*time.Second)
	waitCommitted(t, relpSink, size, 30*time.Second)
	stopTLS()
	stopRELP()
	rs.Kill()
	want := exported(t, dir)
	if len(want) < 6000 {
		t.Fatalf("archive holds %d exported leaves, want at least 6000", len(want))
	}
	for _, sk := range []struct {
		name string
		s    *forward.Sink
	}{{"viatls", tlsSink}, {"viarelp", relpSink}} {
		dups := check(t, want, received(t, `"hostname":"`+sk.name+`"`, rs.Out))
		st := sk.s.Status()
		t.Logf("%s: %d leaves, rsyslogd killed twice under load: all arrived, %d duplicates (sent %d, resent %d)",
			sk.name, len(want), dups, st.Sent, st.Resent)
	}
}
