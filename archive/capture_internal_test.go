package archive

// White-box tests of the Writer's flusher: they start a flush themselves and wait for it, so that the
// outcome does not depend on timing.

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/audit"
)

func testEvent(serial uint32) *audit.RawEvent {
	text := fmt.Sprintf("audit(1700000000.%03d:%d): arch=c000003e syscall=59 success=yes exit=0", serial%1000, serial)
	return &audit.RawEvent{Kind: audit.KindEvent, Serial: serial, Sec: 1_700_000_000, Msec: int32(serial % 1000),
		Received: int64(serial), EOE: true, Records: []audit.Record{{Type: 1300, Text: []byte(text)}}}
}

// flushNow makes the flusher write what is buffered, and waits until it has tried.
func flushNow(t *testing.T, w *Writer) {
	t.Helper()
	w.mu.Lock()
	pending := len(w.buf)
	w.mu.Unlock()
	if pending == 0 {
		t.Fatal("flushNow: nothing buffered")
	}
	w.kick <- struct{}{}
	for {
		w.mu.Lock()
		taken := len(w.buf) == 0
		done := taken && (w.held == 0 || w.werr != nil)
		w.mu.Unlock()
		if done {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func readBack(t *testing.T, dir string) []*audit.RawEvent {
	t.Helper()
	r, err := Open(dir)
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

// Events beyond MaxPending are dropped and counted; once the flusher has freed room, the next Append
// writes a LOST frame (local_drop, the exact count) before its event.
func TestWriterBackpressureLostFrame(t *testing.T) {
	frame := len(AppendFrame(nil, testEvent(100)))
	dir := t.TempDir()
	w, err := Create(dir, Options{FlushInterval: time.Hour, FlushBytes: 1 << 30, MaxPending: 3 * frame})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		w.Append(testEvent(100 + uint32(i)))
	}
	if appended, dropped := w.Stats(); appended != 3 || dropped != 7 {
		t.Fatalf("Stats = %d appended, %d dropped; want 3, 7", appended, dropped)
	}
	flushNow(t, w)
	if appended, dropped := w.Stats(); appended != 3 || dropped != 7 {
		t.Fatalf("after the flush: Stats = %d appended, %d dropped; want 3, 7", appended, dropped)
	}
	w.Append(testEvent(200))
	if appended, dropped := w.Stats(); appended != 5 || dropped != 0 {
		t.Fatalf("after room freed: Stats = %d appended, %d dropped; want 5 (a LOST frame and the event), 0", appended, dropped)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	got := readBack(t, dir)
	var serials []uint32
	for _, ev := range got {
		serials = append(serials, ev.Serial)
	}
	if fmt.Sprint(serials) != "[100 101 102 0 200]" {
		t.Fatalf("serials read back %v, want [100 101 102 0 200]", serials)
	}
	lost := got[3]
	if lost.Kind != audit.KindLost || lost.Lost != (audit.Lost{Reason: audit.LostLocal, Count: 7}) {
		t.Errorf("frame 3 = %+v, want LOST local_drop count 7", lost)
	}
	if d := audit.Decode(lost); d.LostReason != "local_drop" || *d.LostCount != 7 {
		t.Errorf("decoded LOST: reason %q count %d", d.LostReason, *d.LostCount)
	}
}

// withFileSizeLimit runs f with RLIMIT_FSIZE set to limit: a write past it is cut short and then fails
// with EFBIG (the Go runtime ignores SIGXFSZ). It applies to every file the process writes, so nothing
// else may write meanwhile (the test is not parallel, and logs only after).
func withFileSizeLimit(t *testing.T, limit uint64, f func()) {
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	if old.Max != unix.RLIM_INFINITY && old.Max < limit {
		t.Skipf("RLIMIT_FSIZE hard limit %d", old.Max)
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

// A batch the disk takes only in part (ENOSPC, EFBIG) is retried from where it stopped: the file never
// holds a torn frame followed by whole ones, and no frame twice.
func TestWriterRetriesPartialWrite(t *testing.T) {
	dir := t.TempDir()
	w, err := Create(dir, Options{FlushInterval: time.Hour, FlushBytes: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	var want []*audit.RawEvent
	var frames int
	for i := range 10 {
		ev := testEvent(uint32(i + 1))
		want = append(want, ev)
		frames += len(AppendFrame(nil, ev))
		w.Append(ev)
	}
	// The disk fills up in the middle of the fourth frame.
	limit := uint64(len(fileMagic)) + uint64(frames)*3/10 + 5
	var werr error
	var size int64
	withFileSizeLimit(t, limit, func() {
		flushNow(t, w)
		w.mu.Lock()
		werr = w.werr
		w.mu.Unlock()
		fi, err := os.Stat(w.Path())
		if err == nil {
			size = fi.Size()
		}
	})
	if werr == nil {
		t.Fatalf("write past RLIMIT_FSIZE %d did not fail (file is %d bytes)", limit, size)
	}
	if size != int64(limit) {
		t.Fatalf("after the failed write the file is %d bytes, want the limit %d", size, limit)
	}
	t.Logf("first write failed as intended: %v", werr)
	if appended, dropped := w.Stats(); appended != 10 || dropped != 0 {
		t.Errorf("Stats = %d, %d; want 10 held, 0 dropped", appended, dropped)
	}
	w.Append(testEvent(11)) // buffered behind the failed batch
	want = append(want, testEvent(11))
	if err := w.Close(); err != nil { // the disk has room again: the retry completes
		t.Fatalf("Close: %v", err)
	}

	data, err := os.ReadFile(w.Path())
	if err != nil {
		t.Fatal(err)
	}
	wantData := []byte(fileMagic)
	for _, ev := range want {
		wantData = AppendFrame(wantData, ev)
	}
	if !bytes.Equal(data, wantData) {
		t.Errorf("capture file is %d bytes, want exactly the magic and %d frames (%d bytes)", len(data), len(want), len(wantData))
	}
	got := readBack(t, dir)
	if len(got) != len(want) {
		t.Fatalf("read %d events, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].Serial != want[i].Serial || !bytes.Equal(got[i].Records[0].Text, want[i].Records[0].Text) {
			t.Errorf("event %d: serial %d, want %d", i, got[i].Serial, want[i].Serial)
		}
	}
}

// When the disk stays full, Close gives up, says so, and the file holds the frames that were written,
// then at worst one torn frame.
func TestWriterCloseReportsWriteFailure(t *testing.T) {
	dir := t.TempDir()
	w, err := Create(dir, Options{FlushInterval: time.Hour, FlushBytes: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		w.Append(testEvent(uint32(i + 1)))
	}
	first := len(fileMagic) + len(AppendFrame(nil, testEvent(1)))
	var cerr error
	withFileSizeLimit(t, uint64(first+3), func() { cerr = w.Close() })
	if cerr == nil || !bytes.Contains([]byte(cerr.Error()), []byte("archive not fully written")) {
		t.Fatalf("Close = %v, want archive not fully written", cerr)
	}
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ev, _, err := r.Next(); err != nil || ev.Serial != 1 {
		t.Fatalf("first frame: %v", err)
	}
	_, _, err = r.Next()
	if ce, ok := err.(*CorruptError); !ok || ce.Offset != int64(first) {
		t.Fatalf("second frame: %v, want a torn frame at offset %d", err, first)
	}
}
