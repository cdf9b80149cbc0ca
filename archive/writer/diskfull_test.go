package writer_test

// The writer when the disk lags or refuses: backpressure (MaxPending), a partial write resumed, a full
// disk with DiskFullKeep and DiskFullExit, and a Close that cannot complete. White-box: the flusher is
// driven by hand where the outcome must not depend on timing.

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/verify"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/internal/archivetest"
	"github.com/auditarch/auditarch/internal/privtest"
)

// never is a duration no test reaches: segments, epochs and heartbeats that must not happen.
const never = 100_000 * time.Hour

// dfEvent is a kernel event whose leaf has the same size for every serial, with size bytes of random,
// incompressible record text.
func dfEvent(serial uint32, size int) *audit.RawEvent {
	text := make([]byte, size)
	rand.Read(text)
	copy(text, fmt.Sprintf("audit(1700000000.000:%010d): ", serial))
	return &audit.RawEvent{Kind: audit.KindEvent, Serial: serial, Sec: 1_700_000_000, Received: time.Now().UnixNano(), EOE: true,
		Records: []audit.Record{{Type: 1300, Text: text}}}
}

// dfRead reads every event and LOST leaf of dir.
func dfRead(t *testing.T, dir string) []*audit.RawEvent {
	t.Helper()
	r, err := archive.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var evs []*audit.RawEvent
	for {
		ev, _, err := r.Next()
		if err == io.EOF {
			return evs
		}
		if err != nil {
			t.Fatalf("after %d events: %v", len(evs), err)
		}
		evs = append(evs, ev.Clone())
	}
}

// dfVerify verifies dir with the pinned key and fails unless it passes.
func dfVerify(t *testing.T, dir string, key note.Verifier) *verify.Report {
	t.Helper()
	r, err := verify.Dir(dir, verify.Options{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	// A run that could not finish writing is a crash, recorded by the next START: no-stop is the only
	// problem allowed.
	for _, p := range r.Problems {
		if p.Code != verify.CodeNoStop {
			t.Fatalf("verify: %s: %+v", r.Status, r.Problems)
		}
	}
	return r
}

// dfSequence renders events and LOST leaves as "serial" and "lost:reason:count" for comparison.
func dfSequence(evs []*audit.RawEvent) string {
	var b strings.Builder
	for _, ev := range evs {
		if ev.Kind == audit.KindLost {
			fmt.Fprintf(&b, "lost:%s:%d ", ev.Lost.Reason, ev.Lost.Count)
			continue
		}
		fmt.Fprintf(&b, "%d ", ev.Serial)
	}
	return b.String()
}

// Events beyond MaxPending are dropped and counted; once the flusher has freed room, the next Append
// writes a LOST leaf (local_drop, the exact count) before its event, and the archive verifies.
func TestBackpressureLostLeaf(t *testing.T) {
	id, key := archivetest.Keys(t, "backpressure.example")
	dir := filepath.Join(t.TempDir(), "arch")
	entry := archive.EntryHeadSize + len(archive.AppendEventLeaf(nil, dfEvent(100, 300)))
	w, err := writer.Create(dir, writer.Options{Identity: id, FlushInterval: never, FlushBytes: archive.MaxFlushBytes, MaxPending: 3 * entry,
		SegmentDuration: never, EpochDuration: archive.MaxEpoch, HeartbeatInterval: archive.MaxHeartbeat})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		w.Append(dfEvent(100+uint32(i), 300))
	}
	if appended, dropped, _ := w.Stats(); appended != 3 || dropped != 7 {
		t.Fatalf("Stats = %d appended, %d dropped; want 3, 7", appended, dropped)
	}
	writer.FlushNow(t, w)
	if appended, dropped, durable := w.Stats(); appended != 3 || dropped != 7 || durable != 4 {
		t.Fatalf("after the flush: Stats = %d appended, %d dropped, %d durable; want 3, 7, 4 (START and 3 events)", appended, dropped, durable)
	}
	w.Append(dfEvent(110, 300))
	if appended, dropped, _ := w.Stats(); appended != 5 || dropped != 7 {
		t.Fatalf("after room was freed: Stats = %d appended, %d dropped; want 5 (a LOST leaf and the event), 7", appended, dropped)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	evs := dfRead(t, dir)
	if got, want := dfSequence(evs), "100 101 102 lost:local_drop:7 110 "; got != want {
		t.Fatalf("read back %q, want %q", got, want)
	}
	r := dfVerify(t, dir, key)
	if len(r.Lost) != 1 || r.Lost[0].Reason != "local_drop" || r.Lost[0].Count != 7 || r.Lost[0].Index != 4 {
		t.Fatalf("verify reports lost %+v, want local_drop 7 at leaf 4", r.Lost)
	}
}

// withFileSizeLimit runs f with RLIMIT_FSIZE set to limit: a write past it is cut short and the next one
// fails with EFBIG (the Go runtime ignores SIGXFSZ). It applies to every file the process writes, so
// nothing else may write meanwhile (the test is not parallel).
func withFileSizeLimit(t *testing.T, limit uint64, f func()) {
	t.Helper()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	if old.Max != unix.RLIM_INFINITY && old.Max < limit {
		privtest.Unavailable(t, "RLIMIT_FSIZE hard limit %d is below the test's %d", old.Max, limit)
	}
	if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: limit, Max: old.Max}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &old); err != nil {
			t.Fatal(err)
		}
	}()
	f()
}

// dfSegment returns the path of dir's only segment and its size.
func dfSegment(t *testing.T, dir string) (string, int64) {
	t.Helper()
	files, err := archive.ListSegments(dir)
	if err != nil || len(files) != 1 {
		t.Fatalf("segments %v, %v; want one", files, err)
	}
	fi, err := os.Stat(files[0])
	if err != nil {
		t.Fatal(err)
	}
	return files[0], fi.Size()
}

// A block the disk takes only in part (EFBIG here, ENOSPC alike) is resumed from where the write stopped:
// the segment never holds a torn block followed by whole ones, nor a block twice, and nothing counts as
// durable before it is written.
func TestPartialWriteResumes(t *testing.T) {
	id, key := archivetest.Keys(t, "partial.example")
	dir := filepath.Join(t.TempDir(), "arch")
	w, err := writer.Create(dir, writer.Options{Identity: id, FlushInterval: never, FlushBytes: archive.MaxFlushBytes,
		SegmentDuration: never, EpochDuration: archive.MaxEpoch, HeartbeatInterval: archive.MaxHeartbeat})
	if err != nil {
		t.Fatal(err)
	}
	var want []*audit.RawEvent
	for i := range 10 {
		ev := dfEvent(uint32(i+1), 500) // incompressible: the block is over 5 kB
		want = append(want, ev)
		w.Append(ev)
	}
	seg, size0 := dfSegment(t, dir)
	_, _, durable0 := w.Stats()
	// The disk fills up 2000 bytes into the block.
	limit := uint64(size0) + 2000
	var werr error
	var size int64
	withFileSizeLimit(t, limit, func() {
		writer.FlushNow(t, w)
		werr = writer.WriteError(w)
		if fi, err := os.Stat(seg); err == nil {
			size = fi.Size()
		}
	})
	if werr == nil || !errors.Is(werr, unix.EFBIG) {
		t.Fatalf("write past RLIMIT_FSIZE %d: error %v, want EFBIG (segment is %d bytes)", limit, werr, size)
	}
	if size != int64(limit) {
		t.Fatalf("after the failed write the segment is %d bytes, want the limit %d", size, limit)
	}
	if appended, dropped, durable := w.Stats(); appended != 10 || dropped != 0 || durable != durable0 {
		t.Fatalf("Stats = %d appended, %d dropped, %d durable; want 10, 0, %d (nothing more durable)", appended, dropped, durable, durable0)
	}
	t.Logf("the write stopped %d bytes into the block: %v", limit-uint64(size0), werr)
	ev := dfEvent(11, 500) // buffered behind the failed block
	want = append(want, ev)
	w.Append(ev)
	if err := w.Close(); err != nil { // the disk has room again: the write resumes and completes
		t.Fatalf("Close: %v", err)
	}
	got := dfRead(t, dir)
	if len(got) != len(want) {
		t.Fatalf("read %d events, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].Serial != want[i].Serial || !bytes.Equal(got[i].Records[0].Text, want[i].Records[0].Text) {
			t.Fatalf("event %d: serial %d, want %d (or its records differ)", i, got[i].Serial, want[i].Serial)
		}
	}
	r := dfVerify(t, dir, key)
	if len(r.Segments) != 1 || !r.Segments[0].Sealed || r.Verified != 14 { // START, 11 events, STOP, SEAL
		t.Fatalf("verify: %d segments, %d leaves verified: %+v", len(r.Segments), r.Verified, r.Segments)
	}
}

// smallDisk mounts a tmpfs of size (as "2m") on a new directory for the test and unmounts it after.
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	privtest.Root(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		privtest.Unavailable(t, "mount a tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v (detaching it)", dir, err)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	return dir
}

// fillDisk writes a file of n bytes into dir and returns its path.
func fillDisk(t *testing.T, dir string, n int) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	if err := os.WriteFile(path, make([]byte, n), 0o600); err != nil {
		t.Fatalf("filler: %v", err)
	}
	return path
}

// fillAll fills the filesystem of dir with a file of zeros, as another program would, until it refuses
// more, and returns the file's path.
func fillAll(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for zeros := make([]byte, 64<<10); ; {
		if _, err := f.Write(zeros); errors.Is(err, unix.ENOSPC) {
			break
		} else if err != nil {
			t.Fatalf("filler: %v", err)
		}
	}
	for _, n := range []int{4096, 512, 1} { // what a smaller write still takes
		for zeros := make([]byte, n); ; {
			if _, err := f.Write(zeros); err != nil {
				break
			}
		}
	}
	return path
}

// diskFullOptions flush every 10 ms and keep a 64 kB backlog in memory.
func diskFullOptions(id *archive.Identity, segment time.Duration) writer.Options {
	return writer.Options{Identity: id, FlushInterval: 10 * time.Millisecond,
		MaxPending: 64 << 10, SegmentDuration: segment, EpochDuration: 250 * time.Millisecond, HeartbeatInterval: archive.MaxHeartbeat}
}

// dfTrack is what the archive must hold for the events appended through it.
type dfTrack struct {
	want []string // serials, and LOST leaves as "lost:local_drop:N"
	lost uint64   // drops recorded in those LOST leaves
}

// append appends ev and records what the archive must hold for it: its serial, after a LOST leaf with
// the drops not yet recorded, or nothing when it was dropped. It returns how long Append took.
func (tr *dfTrack) append(w *writer.Writer, ev *audit.RawEvent) (dropped bool, took time.Duration) {
	a0, d0, _ := w.Stats()
	start := time.Now()
	w.Append(ev)
	took = time.Since(start)
	a1, d1, _ := w.Stats()
	switch {
	case d1 > d0:
		return true, took
	case a1 == a0+2:
		tr.want = append(tr.want, fmt.Sprintf("lost:local_drop:%d", d0-tr.lost))
		tr.lost = d0
	case a1 != a0+1:
		panic(fmt.Sprintf("Append: appended %d -> %d, dropped %d -> %d", a0, a1, d0, d1))
	}
	tr.want = append(tr.want, fmt.Sprint(ev.Serial))
	return false, took
}

// dfLog is a writer's log (zerolog JSON lines) in a buffer that the flusher may write while the test reads.
type dfLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *dfLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// lines returns the log lines whose message starts with msg, decoded.
func (l *dfLog) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if s, _ := m["message"].(string); strings.HasPrefix(s, msg) {
			out = append(out, m)
		}
	}
	return out
}

// Log messages of a disk that refuses writes.
const (
	logRefused  = "archive write failed"
	logStill    = "archive disk still refuses writes"
	logTakes    = "archive disk takes writes again"
	logStopFull = "archive disk refused the last blocks at stop"
)

// With DiskFullKeep a full disk never blocks Append: events are held up to MaxPending, then dropped and
// counted. Once space is freed everything held is written, the drops are one LOST leaf with their exact
// count before the next event, and the archive verifies. Rotations and re-keys fall due meanwhile. The
// log says once that the disk refuses writes, and once that it takes them again, with the drops.
func TestDiskFullKeep(t *testing.T) {
	for _, tc := range []struct {
		name    string
		segment time.Duration
	}{{"one segment", never}, {"rotating", 200 * time.Millisecond}} {
		t.Run(tc.name, func(t *testing.T) {
			id, key := archivetest.Keys(t, "diskfull.example")
			disk := smallDisk(t, "2m")
			filler := fillDisk(t, disk, 1536<<10)
			dir := filepath.Join(disk, "arch")
			opts := diskFullOptions(id, tc.segment)
			log := &dfLog{}
			opts.Log = zerolog.New(log)
			w, err := writer.Create(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			var tr dfTrack
			var slowest time.Duration
			serial, dropped := uint32(1), 0
			deadline := time.Now().Add(20 * time.Second)
			// Append until the disk is full and 300 events were dropped in a row.
			for streak := 0; streak < 300; serial++ {
				if time.Now().After(deadline) {
					t.Fatalf("the disk did not fill: %d events appended, %d dropped", serial-1, dropped)
				}
				d, took := tr.append(w, dfEvent(serial, 1000))
				slowest = max(slowest, took)
				if d {
					dropped++
					streak++
				} else {
					streak = 0
				}
				time.Sleep(100 * time.Microsecond)
			}
			var fs unix.Statfs_t
			if err := unix.Statfs(disk, &fs); err != nil {
				t.Fatal(err)
			}
			_, _, durableFull := w.Stats()
			t.Logf("disk full after %d events (%d dropped, tree size %d durable, %d bytes free); slowest Append %v",
				serial-1, dropped, durableFull, fs.Bavail*uint64(fs.Bsize), slowest)
			if slowest > 250*time.Millisecond { // far below the time the disk stays full
				t.Errorf("an Append took %v while the disk was full: it must not wait for the disk", slowest)
			}
			time.Sleep(100 * time.Millisecond) // ten flush attempts against the full disk
			if _, _, d := w.Stats(); d != durableFull {
				t.Fatalf("durable size moved from %d to %d while the disk was full", durableFull, d)
			}

			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
			// The held events are written at the next flush; then Append accepts again, and the first
			// event accepted carries the LOST leaf.
			for accepted := false; !accepted; serial++ {
				if time.Now().After(deadline) {
					t.Fatal("Append did not accept events after space was freed")
				}
				d, _ := tr.append(w, dfEvent(serial, 1000))
				if d {
					dropped++
				}
				accepted = !d
				time.Sleep(5 * time.Millisecond)
			}
			for range 20 { // (a slow flusher may still hold MaxPending: drops then end in Close's LOST leaf)
				if d, _ := tr.append(w, dfEvent(serial, 1000)); d {
					dropped++
				}
				serial++
			}
			if err := w.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if _, d, _ := w.Stats(); d > tr.lost {
				tr.want = append(tr.want, fmt.Sprintf("lost:local_drop:%d", d-tr.lost))
				tr.lost = d
			}
			if _, d, _ := w.Stats(); d != uint64(dropped) || d != tr.lost {
				t.Fatalf("Stats: %d dropped; %d were, %d of them recorded before an event", d, dropped, tr.lost)
			}
			got := dfSequence(dfRead(t, dir))
			if w := strings.Join(tr.want, " ") + " "; got != w {
				t.Fatalf("read back:\n%s\nwant:\n%s", got, w)
			}
			r := dfVerify(t, dir, key)
			lost := uint64(0)
			for _, l := range r.Lost {
				if l.Reason != "local_drop" {
					t.Errorf("LOST %+v", l)
				}
				lost += l.Count
			}
			if lost != uint64(dropped) || len(r.Lost) == 0 {
				t.Fatalf("verify reports %d lost in %+v, %d were dropped", lost, r.Lost, dropped)
			}
			t.Logf("%d events dropped, recorded in %d LOST leaves; %d segments verified", dropped, len(r.Lost), len(r.Segments))
			refused, takes := log.lines(t, logRefused), log.lines(t, logTakes)
			if len(refused) != 1 || len(takes) != 1 || len(log.lines(t, logStill)) != 0 {
				t.Fatalf("log: %d lines that the disk refuses writes, %d that it takes them again, %d summaries; want 1, 1, 0:\n%s",
					len(refused), len(takes), len(log.lines(t, logStill)), log.buf.String())
			}
			// The drops while the disk refused writes: the 300 in a row at least (a slow flusher may also
			// drop a few before or after, beyond MaxPending).
			if d, _ := takes[0]["dropped"].(float64); refused[0]["error"] == nil || d < 300 || d > float64(dropped) {
				t.Fatalf("log: %v / %v; want the error, and 300 to %d dropped", refused[0], takes[0], dropped)
			}
			t.Logf("log: %v", takes[0])
		})
	}
}

// With DiskFullExit the write error is delivered on Failed. A Close while the disk stays full ends the run
// in the reserve: the events not written are counted in a LOST leaf before the STOP, and the next run,
// with space again, follows a clean stop.
func TestDiskFullExit(t *testing.T) {
	id, key := archivetest.Keys(t, "diskfull.example")
	disk := smallDisk(t, "2m")
	filler := fillDisk(t, disk, 1536<<10)
	dir := filepath.Join(disk, "arch")
	opts := diskFullOptions(id, never)
	opts.DiskFull = writer.DiskFullExit
	w, err := writer.Create(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	var ferr error
	serial := uint32(1)
	for deadline := time.Now().Add(20 * time.Second); ferr == nil; serial++ {
		if time.Now().After(deadline) {
			t.Fatalf("no failure after %d events", serial)
		}
		w.Append(dfEvent(serial, 1000))
		select {
		case ferr = <-w.Failed():
		default:
		}
		time.Sleep(100 * time.Microsecond)
	}
	if !errors.Is(ferr, unix.ENOSPC) {
		t.Fatalf("Failed delivered %v, want ENOSPC", ferr)
	}
	_, _, durable := w.Stats()
	t.Logf("Failed after %d events, tree size %d durable: %v", serial-1, durable, ferr)

	start := time.Now()
	cerr := w.Close()
	if cerr == nil || !strings.Contains(cerr.Error(), "counted in a LOST leaf") || !errors.Is(cerr, unix.ENOSPC) {
		t.Fatalf("Close on a full disk = %v, want the events counted in a LOST leaf, and ENOSPC", cerr)
	}
	t.Logf("Close ended the run in the reserve after %v: %v", time.Since(start).Round(time.Millisecond), cerr)
	events, lost := dfCount(t, dir)
	if _, dropped, _ := w.Stats(); events+lost != uint64(serial-1) || dropped != lost || lost == 0 {
		t.Fatalf("%d events appended, %d durable, %d in LOST leaves; Stats: %d dropped", serial-1, events, lost, dropped)
	}
	dfStoppedLosing(t, dir, key, 1, lost)

	// Space again: the next run follows a clean stop.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	archivetest.Write(t, dir, diskFullOptions(id, never), 3, 0)
	r := dfVerify(t, dir, key)
	if len(r.Problems) != 0 || len(r.Runs) != 2 || r.Runs[0].Ended != "stopped" || r.Runs[1].Ended != "stopped" || r.Runs[1].Recovered != nil {
		t.Fatalf("problems %+v, runs %+v, want two stopped runs", r.Problems, r.Runs)
	}
}

// When the disk never takes the last blocks, nor the block that would end the run in the reserve's room
// (here a file size limit, which no reserve lifts), Close retries (50 times, a flush interval apart),
// gives up and says so. The archive then ends like a crash: a torn block at worst, reported as the
// unsigned tail; the next run records it, and everything that was durable verifies.
func TestPartialWriteCloseFails(t *testing.T) {
	id, key := archivetest.Keys(t, "partial.example")
	dir := filepath.Join(t.TempDir(), "arch")
	w, err := writer.Create(dir, writer.Options{Identity: id, FlushInterval: 2 * time.Millisecond,
		SegmentDuration: never, EpochDuration: archive.MaxEpoch, HeartbeatInterval: archive.MaxHeartbeat})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		w.Append(dfEvent(uint32(i+1), 500))
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		if _, _, d := w.Stats(); d == 11 { // START and the events
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the events did not become durable")
		}
		time.Sleep(time.Millisecond)
	}
	seg, size := dfSegment(t, dir)
	var cerr error
	var took time.Duration
	withFileSizeLimit(t, uint64(size)+100, func() {
		for i := range 10 {
			w.Append(dfEvent(uint32(i+11), 500))
		}
		start := time.Now()
		cerr = w.Close()
		took = time.Since(start)
	})
	if cerr == nil || !strings.Contains(cerr.Error(), "archive not fully written") || !errors.Is(cerr, unix.EFBIG) {
		t.Fatalf("Close = %v, want archive not fully written: EFBIG", cerr)
	}
	t.Logf("Close gave up after %v: %v", took.Round(time.Millisecond), cerr)
	if fi, err := os.Stat(seg); err != nil || fi.Size() != size+100 {
		t.Fatalf("segment: %v, %v; want %d bytes", fi, err, size+100)
	}
	r, err := verify.Dir(dir, verify.Options{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	codes := map[string]bool{}
	for _, p := range r.Problems {
		codes[p.Code] = true
	}
	if r.Status != verify.Incomplete || len(codes) != 2 || !codes["torn-tail"] || !codes["no-stop"] ||
		r.Unsigned == nil || r.Unsigned.Torn != 100 || r.Leaves != 11 || r.Unsigned.First+r.Unsigned.Leaves != 11 {
		t.Fatalf("verify after the failed Close: %s, %d leaves, tail %+v, problems %+v", r.Status, r.Leaves, r.Unsigned, r.Problems)
	}

	archivetest.Write(t, dir, writer.Options{Identity: id}, 1, 0)
	r = dfVerify(t, dir, key)
	if len(r.Runs) != 2 || r.Runs[0].Ended != "crashed" || r.Runs[1].Recovered == nil || r.Runs[1].Recovered.TornBytes != 100 {
		t.Fatalf("runs after recovery: %+v", r.Runs)
	}
	rd, err := archive.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	events, torn := 0, 0
	for {
		_, _, err := rd.Next()
		var ce *archive.CorruptError
		if errors.As(err, &ce) && ce.Torn {
			torn++
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		events++
	}
	if events != 11 || torn != 1 {
		t.Fatalf("read %d events and %d torn blocks, want the 10 durable events, the next run's, and the torn block", events, torn)
	}
}

// A disk full for a while, freed before Close: the events held meanwhile are all written, none is
// dropped, and the reserve was never touched: it holds its ReserveBytes for the next stop on a full disk.
func TestDiskFullFreedBeforeClose(t *testing.T) {
	id, key := archivetest.Keys(t, "diskfull.example")
	disk := smallDisk(t, "2m")
	dir := filepath.Join(disk, "arch")
	opts := diskFullOptions(id, never)
	opts.MaxPending = 1 << 20
	w, err := writer.Create(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	filler := fillAll(t, disk)
	for i := range 100 {
		w.Append(dfEvent(uint32(i+1), 1000))
		time.Sleep(time.Millisecond)
	}
	if writer.WriteError(w) == nil {
		t.Fatal("the full disk took the writes")
	}
	if size, alloc := dfReserve(t, dir); size != writer.ReserveBytes || alloc < writer.ReserveBytes {
		t.Fatalf("reserve while the disk is full: %d bytes, %d allocated; want %d", size, alloc, writer.ReserveBytes)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, dropped, _ := w.Stats(); dropped != 0 {
		t.Fatalf("%d events dropped", dropped)
	}
	if events, lost := dfCount(t, dir); events != 100 || lost != 0 {
		t.Fatalf("read back %d events, %d lost; want 100, 0", events, lost)
	}
	if size, alloc := dfReserve(t, dir); size != writer.ReserveBytes || alloc < writer.ReserveBytes {
		t.Fatalf("reserve after Close: %d bytes, %d allocated; want %d", size, alloc, writer.ReserveBytes)
	}
	if r := dfVerify(t, dir, key); len(r.Problems) != 0 || len(r.Lost) != 0 {
		t.Fatalf("verify: problems %+v, lost %+v", r.Problems, r.Lost)
	}
}

// dfClock is a writer clock that runs with the real one, and jumps forward when the test says.
type dfClock struct{ ahead atomic.Int64 }

func (c *dfClock) Now() time.Time { return time.Now().Add(time.Duration(c.ahead.Load())) }

// While the disk stays full the log says so once, with the error, and then at most once a minute how
// many events are held and dropped, not at every flush; once the disk takes writes again it says for
// how long it did not, and how many events were dropped.
func TestDiskFullLogsRarely(t *testing.T) {
	id, key := archivetest.Keys(t, "diskfull.example")
	disk := smallDisk(t, "2m")
	dir := filepath.Join(disk, "arch")
	opts := diskFullOptions(id, never)
	opts.MaxPending, opts.EpochDuration = 10<<20, archive.MaxEpoch
	clock := &dfClock{}
	log := &dfLog{}
	opts.Now, opts.Log = clock.Now, zerolog.New(log)
	w, err := writer.Create(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	filler := fillAll(t, disk)
	serial := uint32(1)
	appendFor := func(d time.Duration) { // about 200 events a second, 50 flushes (failing) a second
		for end := time.Now().Add(d); time.Now().Before(end); serial++ {
			w.Append(dfEvent(serial, 200))
			time.Sleep(5 * time.Millisecond)
		}
	}
	appendFor(500 * time.Millisecond)
	if writer.WriteError(w) == nil {
		t.Fatal("the full disk took the writes")
	}
	for range 2 { // two minutes pass (the clock jumps: a CLOCK leaf each)
		clock.ahead.Add(int64(61 * time.Second))
		appendFor(300 * time.Millisecond)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); writer.WriteError(w) != nil; {
		if time.Now().After(deadline) {
			t.Fatal("the writes still fail after the disk was freed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	refused, still, takes := log.lines(t, logRefused), log.lines(t, logStill), log.lines(t, logTakes)
	if len(refused) != 1 || len(still) != 2 || len(takes) != 1 {
		t.Fatalf("log: %d lines that the disk refuses writes, %d summaries, %d that it takes them again; want 1, 2, 1:\n%s",
			len(refused), len(still), len(takes), log.buf.String())
	}
	if !strings.Contains(fmt.Sprint(refused[0]["error"]), "no space left on device") {
		t.Errorf("the first line does not give the error: %v", refused[0])
	}
	for i, l := range still {
		if l["held"].(float64) < 50 || l["dropped"] != float64(0) || l["refused_for"].(float64) < float64(61_000*(i+1)) {
			t.Errorf("summary %d: %v; want at least 50 events held, none dropped, refused for %d s", i, l, 61*(i+1))
		}
	}
	if takes[0]["dropped"] != float64(0) || takes[0]["refused_for"].(float64) < 122_000 {
		t.Errorf("the last line: %v; want none dropped, refused for at least 122 s", takes[0])
	}
	if _, dropped, _ := w.Stats(); dropped != 0 {
		t.Errorf("%d events dropped", dropped)
	}
	dfVerify(t, dir, key)
	t.Logf("%d events appended, all written; the log:\n%s", serial-1, log.buf.String())
}

// dfCount returns the events and the local_drop LOST counts of an archive as read back.
func dfCount(t *testing.T, dir string) (events, lost uint64) {
	t.Helper()
	for _, ev := range dfRead(t, dir) {
		switch {
		case ev.Kind == audit.KindEvent:
			events++
		case ev.Lost.Reason == audit.LostLocal:
			lost += ev.Lost.Count
		}
	}
	return events, lost
}

// dfReserve returns the size of the reserve file of dir and the bytes allocated to it.
func dfReserve(t *testing.T, dir string) (size, allocated int64) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dir, writer.ReserveFile), &st); err != nil {
		t.Fatal(err)
	}
	return st.Size, st.Blocks * 512
}

// A disk that another program filled stays full until Close: the events held in memory are counted in a
// LOST leaf (local_drop) with the events dropped before, and the run ends with STOP, SEAL and the final
// checkpoint, written into the reserve. Every event appended is durable or counted: the LOST count is
// the events appended less the events durable. Stats says so, Close says so with the write error, and
// verify reports the count and a clean stop (no torn tail, no missing STOP).
func TestDiskFullUntilClose(t *testing.T) {
	id, key := archivetest.Keys(t, "diskfull.example")
	disk := smallDisk(t, "2m")
	dir := filepath.Join(disk, "arch")
	opts := diskFullOptions(id, never)
	log := &dfLog{}
	opts.Log = zerolog.New(log)
	w, err := writer.Create(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if size, alloc := dfReserve(t, dir); size != writer.ReserveBytes || alloc < writer.ReserveBytes {
		t.Fatalf("reserve: %d bytes, %d allocated; want %d", size, alloc, writer.ReserveBytes)
	}
	t.Cleanup(func() { w.Close() })
	serial := uint32(1)
	for ; serial <= 50; serial++ { // within MaxPending
		w.Append(dfEvent(serial, 1000))
	}
	writer.FlushNow(t, w)
	fillAll(t, disk)
	// Events until the disk refuses a block (the segment's last page may still take a small one).
	for deadline := time.Now().Add(5 * time.Second); writer.WriteError(w) == nil; serial++ {
		if time.Now().After(deadline) {
			t.Fatal("the full disk took every block")
		}
		w.Append(dfEvent(serial, 1000))
		time.Sleep(time.Millisecond)
	}
	// LOST leaves that the capture appended are not counted as events: the stop writes their counts.
	for _, l := range []audit.Lost{{Reason: audit.LostKernel, Count: 7}, {Reason: audit.LostSocket}, {Reason: audit.LostKernel, Count: 2}} {
		w.Append(&audit.RawEvent{Kind: audit.KindLost, EOE: true, Received: time.Now().UnixNano(), Lost: l})
	}
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); serial++ {
		w.Append(dfEvent(serial, 1000)) // held up to MaxPending (64 kB), then dropped
		time.Sleep(200 * time.Microsecond)
	}
	appended := uint64(serial - 1)
	_, droppedBefore, _ := w.Stats()
	pos := w.Durable()
	cerr := w.Close()
	if cerr == nil || !errors.Is(cerr, unix.ENOSPC) || !strings.Contains(cerr.Error(), "counted in a LOST leaf") {
		t.Fatalf("Close on a full disk = %v, want the events counted in a LOST leaf, and ENOSPC", cerr)
	}
	events, lost := dfCount(t, dir)
	_, dropped, durable := w.Stats()
	t.Logf("%d events appended, %d durable, %d dropped before Close, %d in all (LOST %d); tree size %d; Close: %v",
		appended, events, droppedBefore, dropped, lost, durable, cerr)
	if events < 50 || droppedBefore == 0 || dropped <= droppedBefore || lost != dropped || events+lost != appended {
		t.Fatalf("%d events appended, %d durable and %d in LOST leaves; Stats %d dropped (%d before Close)", appended, events, lost, dropped, droppedBefore)
	}
	seg, size := dfSegment(t, dir)
	if filepath.Base(seg) != pos.Segment || size-pos.Offset > writer.ReserveBytes/2 {
		t.Fatalf("the stop took %d bytes after %s:%d (the segment is %s): more than half the reserve", size-pos.Offset, pos.Segment, pos.Offset, seg)
	}
	t.Logf("the stop's block: %d bytes", size-pos.Offset)
	if size, _ := dfReserve(t, dir); size != 0 {
		t.Errorf("the reserve holds %d bytes after the stop, want it released", size)
	}

	r := dfStoppedLosing(t, dir, key, 1, dropped)
	if len(r.Lost) != 3 || r.Lost[0].Reason != "kernel" || r.Lost[0].Count != 9 || r.Lost[1].Reason != "local_drop" ||
		r.Lost[2].Reason != "socket_overrun" || r.Lost[2].Count != 0 {
		t.Fatalf("verify reports LOST %+v, want kernel 9, local_drop %d, socket_overrun 0", r.Lost, dropped)
	}
	refused, stop := log.lines(t, logRefused), log.lines(t, logStopFull)
	if len(refused) != 1 || len(stop) != 1 || len(log.lines(t, logTakes)) != 0 || len(log.lines(t, logStill)) != 0 ||
		stop[0]["dropped"] != float64(dropped) || stop[0]["held"] != float64(dropped-droppedBefore) {
		t.Fatalf("log: want one line when the disk refused writes, one at the stop with %d dropped (%d held):\n%s", dropped, dropped-droppedBefore, log.buf.String())
	}
}

// dfStoppedLosing verifies dir, whose last run of runs stopped on a full disk after dropping lost events
// in all: verify passes with no problem (no torn tail, no missing STOP), every run stopped, the last
// segment is sealed, the LOST leaves just before the STOP include a local_drop one, and the local_drop
// LOST leaves count lost events.
func dfStoppedLosing(t *testing.T, dir string, key note.Verifier, runs int, lost uint64) *verify.Report {
	t.Helper()
	r := dfVerify(t, dir, key)
	if len(r.Problems) != 0 || r.Unsigned != nil || r.Verified != r.Leaves || len(r.Runs) != runs {
		t.Fatalf("verify: %s, %d of %d leaves verified, problems %+v, unsigned tail %+v, runs %+v", r.Status, r.Verified, r.Leaves, r.Problems, r.Unsigned, r.Runs)
	}
	for _, run := range r.Runs {
		if run.Ended != "stopped" || run.Recovered != nil {
			t.Fatalf("verify: runs %+v, want each stopped", r.Runs)
		}
	}
	if last := r.Segments[len(r.Segments)-1]; !last.Sealed {
		t.Fatalf("the last segment is not sealed: %+v", last)
	}
	stop, n := *r.Runs[runs-1].Stop, len(r.Lost)
	for n > 0 && r.Lost[n-1].Index+uint64(len(r.Lost)-n) == stop-1 && r.Lost[n-1].Reason != "local_drop" {
		n--
	}
	sum := uint64(0)
	for _, l := range r.Lost {
		if l.Reason == "local_drop" {
			sum += l.Count
		}
	}
	if n == 0 || r.Lost[n-1].Reason != "local_drop" || r.Lost[n-1].Index+uint64(len(r.Lost)-n) != stop-1 || sum != lost {
		t.Fatalf("verify reports LOST %+v, want local_drop %d in all, one among those just before the STOP (%+v)", r.Lost, lost, r.Runs[runs-1])
	}
	return r
}

// The disk fills just as a segment is cut: the seal still fits into the last page of the old segment,
// the next segment does not (tmpfs allocates 4 KiB pages). The stop then creates that segment in the
// reserve's room, with the LOST leaf, STOP and seal; the archive verifies with both segments sealed.
func TestDiskFullAtRotation(t *testing.T) {
	id, key := archivetest.Keys(t, "diskfull.example")
	disk := smallDisk(t, "2m")
	dir := filepath.Join(disk, "arch")
	opts := diskFullOptions(id, time.Minute)
	opts.EpochDuration = archive.MaxEpoch
	clock := &dfClock{}
	opts.Now = clock.Now
	w, err := writer.Create(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	// Events until the segment's last page has room for the seal's block (about 500 bytes), not for more.
	serial := uint32(1)
	for {
		w.Append(dfEvent(serial, 300))
		serial++
		writer.FlushNow(t, w)
		if _, size := dfSegment(t, dir); size%4096 >= 1000 && size%4096 <= 3000 {
			break
		}
	}
	seg, size := dfSegment(t, dir)
	fillAll(t, disk)
	_, _, durable := w.Stats()
	clock.ahead.Add(int64(time.Minute)) // the next flush cuts the segment
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if _, _, d := w.Stats(); d > durable && writer.WriteError(w) != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the seal was not written (%v), or the next segment was", writer.WriteError(w))
		}
	}
	fi, err := os.Stat(seg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the seal took %d bytes of the %d left in the segment's last page; the next segment: %v", fi.Size()-size, 4096-size%4096, writer.WriteError(w))
	held := 0
	for ; held < 5; held++ {
		w.Append(dfEvent(serial, 300)) // held: no segment takes them
		serial++
	}
	if err := w.Close(); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("Close = %v, want ENOSPC", err)
	}
	if _, dropped, _ := w.Stats(); dropped != uint64(held) {
		t.Fatalf("Stats: %d dropped, want %d", dropped, held)
	}
	r := dfStoppedLosing(t, dir, key, 1, uint64(held))
	if len(r.Segments) != 2 || !r.Segments[0].Sealed || r.Segments[1].Leaves != 4 { // KEY, LOST, STOP, SEAL
		t.Fatalf("segments %+v, want the first sealed, and the next one created by the stop", r.Segments)
	}
}

// After a stop on a full disk the reserve is spent. A restart while the disk is still full fails with a
// clear error and writes nothing: the archive still ends with that STOP. A restart that finds room for the
// reserve and not for the START allocates the reserve and fails; the first restart with room for both
// starts a run.
func TestDiskFullRestart(t *testing.T) {
	id, key := archivetest.Keys(t, "diskfull.example")
	disk := smallDisk(t, "2m")
	dir := filepath.Join(disk, "arch")
	opts := diskFullOptions(id, never)
	w, err := writer.Create(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		w.Append(dfEvent(uint32(i+1), 1000))
	}
	writer.FlushNow(t, w)
	filler := fillAll(t, disk)
	for i := range 5 {
		w.Append(dfEvent(uint32(i+11), 1000))
	}
	if err := w.Close(); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("Close = %v, want ENOSPC", err)
	}
	if size, alloc := dfReserve(t, dir); size != 0 || alloc != 0 {
		t.Fatalf("reserve after the stop: %d bytes, %d allocated; want it released", size, alloc)
	}
	dfStoppedLosing(t, dir, key, 1, 5)
	files := func() string {
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, e := range ents {
			fi, _ := e.Info()
			fmt.Fprintf(&b, "%s %d\n", e.Name(), fi.Size())
		}
		return b.String()
	}
	fillAll(t, disk) // the other program takes what the stop left of the reserve
	before := files()
	_, err = writer.Create(dir, opts)
	if !errors.Is(err, unix.ENOSPC) || !strings.Contains(err.Error(), "no room for the 64 KiB") {
		t.Fatalf("Create on a full disk = %v, want an error about the reserve, wrapping ENOSPC", err)
	}
	t.Logf("Create on a full disk: %v", err)
	if after := files(); after != before {
		t.Fatalf("the failed Create changed the archive directory:\n%s\nwas:\n%s", after, before)
	}
	dfStoppedLosing(t, dir, key, 1, 5)

	// Room for the reserve only.
	fi, err := os.Stat(filler)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filler, fi.Size()-writer.ReserveBytes); err != nil {
		t.Fatal(err)
	}
	_, err = writer.Create(dir, opts)
	if !errors.Is(err, unix.ENOSPC) || !strings.Contains(err.Error(), "no room for the run's START") {
		t.Fatalf("Create with room for the reserve only = %v, want an error about the START, wrapping ENOSPC", err)
	}
	t.Logf("Create with room for the reserve only: %v", err)
	if size, alloc := dfReserve(t, dir); size != writer.ReserveBytes || alloc < writer.ReserveBytes {
		t.Fatalf("reserve after that Create: %d bytes, %d allocated; want %d", size, alloc, writer.ReserveBytes)
	}
	if after := files(); after != strings.Replace(before, writer.ReserveFile+" 0", fmt.Sprint(writer.ReserveFile, " ", writer.ReserveBytes), 1) {
		t.Fatalf("that Create changed the archive directory beyond the reserve:\n%s\nwas:\n%s", after, before)
	}
	dfStoppedLosing(t, dir, key, 1, 5)

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	w, err = writer.Create(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if size, alloc := dfReserve(t, dir); size != writer.ReserveBytes || alloc < writer.ReserveBytes {
		t.Fatalf("reserve after a restart with room: %d bytes, %d allocated; want %d", size, alloc, writer.ReserveBytes)
	}
	for i := range 3 {
		w.Append(dfEvent(uint32(i+16), 1000))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r := dfVerify(t, dir, key)
	if len(r.Problems) != 0 || len(r.Runs) != 2 || r.Runs[0].Ended != "stopped" || r.Runs[1].Ended != "stopped" || r.Runs[1].Recovered != nil ||
		len(r.Lost) != 1 || r.Lost[0].Count != 5 {
		t.Fatalf("verify after the restart: %s %+v, runs %+v, lost %+v", r.Status, r.Problems, r.Runs, r.Lost)
	}
	if events, lost := dfCount(t, dir); events != 13 || lost != 5 {
		t.Fatalf("read back %d events and %d lost, want 13 and 5", events, lost)
	}
}
