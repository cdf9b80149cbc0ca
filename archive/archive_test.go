package archive_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/internal/capfile"
)

// fileMagic is the header of a capture log v0 file (docs/format.md); the tests need it to locate frames.
const fileMagic = "AUDITARCH-CAPTURE-0\n"

// t0 is the replay clock's start.
const t0 = int64(1_700_000_000) * 1e9

// replay returns the events of a recorded kernel stream in ../testdata.
func replay(t testing.TB, name string) []*audit.RawEvent {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := capfile.Read(f)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	evs := capfile.Replay(c, t0)
	if len(evs) == 0 {
		t.Fatalf("%s: no events", name)
	}
	return evs
}

// testEvents is workload.cap, then a LOST event of each reason, then events that exercise every flag and
// arbitrary record bytes.
func testEvents(t testing.TB) []*audit.RawEvent {
	t.Helper()
	evs := replay(t, "workload.cap")
	for i, l := range []audit.Lost{
		{Reason: audit.LostKernel, Count: 404},
		{Reason: audit.LostGap, Count: 3, First: 4294967295, Last: 2}, // wraps past 2^32-1
		{Reason: audit.LostLocal, Count: 1<<64 - 1},
		{Reason: audit.LostSocket},
	} {
		evs = append(evs, &audit.RawEvent{Kind: audit.KindLost, EOE: true, Sec: 1_800_000_000 + int64(i), Msec: 999,
			Received: t0 + int64(i), Lost: l})
	}
	evs = append(evs,
		&audit.RawEvent{Kind: audit.KindEvent, Serial: 1<<32 - 1, Sec: -1, Msec: -1, Received: -1, Late: true,
			Records: []audit.Record{{Type: 1300, Text: []byte("audit(1.002:3): \x00\xff\n\"bytes\"")}, {Type: 0xffff}}},
		&audit.RawEvent{Kind: audit.KindEvent, Serial: 7, EOE: true, Late: true}, // no records
		&audit.RawEvent{Kind: audit.KindEvent, Serial: 8, Records: []audit.Record{{Type: 1305, Text: bytes.Repeat([]byte("x"), 200_000)}}},
	)
	return evs
}

// writeArchive appends evs to a new capture file in dir and closes it.
func writeArchive(t testing.TB, dir string, evs []*audit.RawEvent) string {
	t.Helper()
	w, err := archive.Create(dir, archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		w.Append(ev)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if appended, dropped := w.Stats(); appended != uint64(len(evs)) || dropped != 0 {
		t.Fatalf("Stats = %d appended, %d dropped; want %d, 0", appended, dropped, len(evs))
	}
	return w.Path()
}

// frameOffsets returns the file offset of each event's frame in a capture file holding exactly evs, and
// the file's length.
func frameOffsets(evs []*audit.RawEvent) (offs []int64, size int64) {
	size = int64(len(fileMagic))
	for _, ev := range evs {
		offs = append(offs, size)
		size += int64(len(archive.AppendFrame(nil, ev)))
	}
	return offs, size
}

// readAll reads dir to the end. It stops at the first error that is not io.EOF and returns it.
func readAll(t testing.TB, dir string) ([]*audit.RawEvent, []uint64, error) {
	t.Helper()
	r, err := archive.Open(dir)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	var evs []*audit.RawEvent
	var idx []uint64
	for {
		ev, i, err := r.Next()
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return evs, idx, err
		}
		evs = append(evs, ev.Clone()) // ev is valid only until the next call
		idx = append(idx, i)
	}
}

// sameEvent reports how got differs from want, field by field and byte-exact for the records.
func sameEvent(got, want *audit.RawEvent) error {
	if got.Kind != want.Kind || got.Serial != want.Serial || got.Sec != want.Sec || got.Msec != want.Msec ||
		got.Received != want.Received || got.EOE != want.EOE || got.Late != want.Late {
		return fmt.Errorf("header: got kind=%d serial=%d sec=%d msec=%d received=%d eoe=%v late=%v, want kind=%d serial=%d sec=%d msec=%d received=%d eoe=%v late=%v",
			got.Kind, got.Serial, got.Sec, got.Msec, got.Received, got.EOE, got.Late,
			want.Kind, want.Serial, want.Sec, want.Msec, want.Received, want.EOE, want.Late)
	}
	if got.Lost != want.Lost {
		return fmt.Errorf("lost: got %+v, want %+v", got.Lost, want.Lost)
	}
	if len(got.Records) != len(want.Records) {
		return fmt.Errorf("got %d records, want %d", len(got.Records), len(want.Records))
	}
	for i := range got.Records {
		g, w := got.Records[i], want.Records[i]
		if g.Type != w.Type || !bytes.Equal(g.Text, w.Text) {
			return fmt.Errorf("record %d: got type %d %.80q, want type %d %.80q", i, g.Type, g.Text, w.Type, w.Text)
		}
	}
	return nil
}

func checkEvents(t *testing.T, got []*audit.RawEvent, idx []uint64, want []*audit.RawEvent) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("read %d events, want %d", len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		if err := sameEvent(got[i], want[i]); err != nil {
			t.Errorf("event %d: %v", i, err)
		}
		if idx[i] != uint64(i) {
			t.Errorf("event %d has index %d", i, idx[i])
		}
	}
}

// corruptErr checks that err is a *CorruptError for path at offset, and returns it.
func corruptErr(t *testing.T, err error, path string, offset int64) *archive.CorruptError {
	t.Helper()
	if !errors.Is(err, archive.ErrCorrupt) || !archive.IsCorrupt(err) {
		t.Fatalf("got error %v, want one wrapping ErrCorrupt", err)
	}
	var ce *archive.CorruptError
	if !errors.As(err, &ce) {
		t.Fatalf("got error %v (%T), want a *CorruptError", err, err)
	}
	if ce.Path != path || ce.Offset != offset {
		t.Fatalf("CorruptError at %s offset %d, want %s offset %d (%v)", ce.Path, ce.Offset, path, offset, err)
	}
	return ce
}

func TestArchiveRoundTrip(t *testing.T) {
	want := testEvents(t)
	dir := t.TempDir()
	path := writeArchive(t, dir, want)

	if _, size := frameOffsets(want); fileSize(t, path) != size {
		t.Errorf("%s is %d bytes, want magic and frames = %d", path, fileSize(t, path), size)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("capture file mode: %v %v, want 0600", fi.Mode(), err)
	}
	got, idx, err := readAll(t, dir)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	checkEvents(t, got, idx, want)

	// LOST events of every reason are among them.
	reasons := map[audit.LostReason]bool{}
	for _, ev := range got {
		if ev.Kind == audit.KindLost {
			reasons[ev.Lost.Reason] = true
		}
	}
	if len(reasons) != 4 {
		t.Errorf("LOST reasons read back: %v, want all four", reasons)
	}
}

func TestArchiveLostCapture(t *testing.T) {
	want := replay(t, "lost.cap")
	dir := t.TempDir()
	writeArchive(t, dir, want)
	got, idx, err := readAll(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	checkEvents(t, got, idx, want)
	lost := 0
	for _, ev := range got {
		if ev.Kind == audit.KindLost && ev.Lost.Reason == audit.LostKernel && ev.Lost.Count > 0 {
			lost++
		}
	}
	if lost == 0 {
		t.Error("no kernel LOST event read back from lost.cap")
	}
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// Two writers in the same directory, one after the other: the reader returns the first file's events,
// then the second's, with indexes continuing across the files.
func TestArchiveMultipleFiles(t *testing.T) {
	evs := testEvents(t)
	first, second := evs[:len(evs)/2], evs[len(evs)/2:]
	dir := t.TempDir()
	p1 := writeArchive(t, dir, first)
	p2 := writeArchive(t, dir, second)
	if p1 == p2 {
		t.Fatalf("both writers wrote %s", p1)
	}
	// An empty capture file (a run that captured nothing) between them changes nothing.
	writeArchive(t, dir, nil)
	// Neither do files that are not capture files.
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, idx, err := readAll(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	checkEvents(t, got, idx, evs)
}

// A crash mid-write leaves the last frame torn. Every earlier event reads fine, then a *CorruptError at the
// torn frame's offset, then io.EOF.
func TestReaderTornTail(t *testing.T) {
	evs := replay(t, "workload.cap")
	dir := t.TempDir()
	path := writeArchive(t, dir, evs)
	whole, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	offs, size := frameOffsets(evs)
	last := offs[len(offs)-1]
	for cut := int64(1); cut < size-last; cut++ {
		if err := os.WriteFile(path, whole[:size-cut], 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := archive.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		for i := range len(evs) - 1 {
			ev, idx, err := r.Next()
			if err != nil {
				t.Fatalf("cut %d: event %d: %v", cut, i, err)
			}
			if err := sameEvent(ev, evs[i]); err != nil || idx != uint64(i) {
				t.Fatalf("cut %d: event %d (index %d): %v", cut, i, idx, err)
			}
		}
		_, _, err = r.Next()
		ce := corruptErr(t, err, path, last)
		if !strings.Contains(ce.Reason, "torn") {
			t.Errorf("cut %d: reason %q does not say the frame is torn", cut, ce.Reason)
		}
		if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), fmt.Sprint(last)) {
			t.Errorf("cut %d: error %q does not name the file and offset", cut, err)
		}
		for range 2 {
			if _, _, err := r.Next(); err != io.EOF {
				t.Fatalf("cut %d: after the torn frame: %v, want io.EOF", cut, err)
			}
		}
	}
}

// A flipped byte inside a middle frame fails its checksum; the reader skips the rest of that file and
// goes on with the next one.
func TestReaderFlippedByte(t *testing.T) {
	evs := replay(t, "workload.cap")
	dir := t.TempDir()
	path := writeArchive(t, dir, evs)
	offs, _ := frameOffsets(evs)
	mid := len(evs) / 2
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[offs[mid]+8+10] ^= 0x20 // a byte of the payload (the serial's)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	// A second, intact file after the damaged one is still read.
	next := writeArchive(t, dir, evs[:3])
	if next < path {
		t.Fatalf("second file %s sorts before the first %s", next, path)
	}

	r, err := archive.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range mid {
		ev, idx, err := r.Next()
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if err := sameEvent(ev, evs[i]); err != nil || idx != uint64(i) {
			t.Fatalf("event %d (index %d): %v", i, idx, err)
		}
	}
	_, _, err = r.Next()
	ce := corruptErr(t, err, path, offs[mid])
	if !strings.Contains(ce.Reason, "checksum mismatch") {
		t.Errorf("reason %q, want a checksum mismatch", ce.Reason)
	}
	for i := range 3 {
		ev, idx, err := r.Next()
		if err != nil {
			t.Fatalf("second file, event %d: %v", i, err)
		}
		if err := sameEvent(ev, evs[i]); err != nil {
			t.Fatalf("second file, event %d: %v", i, err)
		}
		if idx != uint64(mid+i) {
			t.Errorf("second file, event %d has index %d, want %d", i, idx, mid+i)
		}
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Fatalf("at the end: %v, want io.EOF", err)
	}
}

// A frame whose checksum verifies but whose payload does not decode is reported, not returned.
func TestReaderUndecodableFrame(t *testing.T) {
	dir := t.TempDir()
	path := writeArchive(t, dir, nil)
	payload := []byte{9, 0} // unknown kind
	payload = append(payload, make([]byte, 24)...)
	frame := frameOf(payload)
	if err := appendFile(path, frame); err != nil {
		t.Fatal(err)
	}
	r, err := archive.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = r.Next()
	ce := corruptErr(t, err, path, int64(len(fileMagic)))
	if !strings.Contains(ce.Reason, "unknown frame kind 9") {
		t.Errorf("reason %q, want it to name kind 9", ce.Reason)
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Fatalf("%v, want io.EOF", err)
	}
}

// frameOf frames payload as AppendFrame does: u32 length, u32 CRC-32C, payload.
func frameOf(payload []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(payload)))
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(payload, crc32.MakeTable(crc32.Castagnoli)))
	return append(b, payload...)
}

func appendFile(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func TestReaderBadMagic(t *testing.T) {
	for name, content := range map[string]string{
		"other":  "AUDITARCH-CAPTURE-9\n",
		"empty":  "", // a crash before the header was written
		"short":  "AUDITARCH",
		"binary": "\x00\x01\x02\x03",
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "capture-20240101T000000.000000000Z-1.log")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			good := writeArchive(t, dir, testEvents(t)[:2])
			r, err := archive.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = r.Next()
			ce := corruptErr(t, err, path, 0)
			if !strings.Contains(ce.Reason, "magic") {
				t.Errorf("reason %q, want it to mention the magic", ce.Reason)
			}
			// The next file is still read.
			for i := range 2 {
				if _, idx, err := r.Next(); err != nil || idx != uint64(i) {
					t.Fatalf("%s event %d: index %d, %v", good, i, idx, err)
				}
			}
			if _, _, err := r.Next(); err != io.EOF {
				t.Fatalf("%v, want io.EOF", err)
			}
		})
	}
}

func TestOpenEmptyArchive(t *testing.T) {
	dir := t.TempDir()
	_, err := archive.Open(dir)
	if err == nil || !strings.Contains(err.Error(), "no capture files in "+dir) {
		t.Errorf("Open(empty dir) = %v, want an error that says there are no capture files in %s", err, dir)
	}
	if archive.IsCorrupt(err) {
		t.Errorf("an empty directory is not a corrupt archive: %v", err)
	}

	missing := filepath.Join(dir, "nope")
	_, err = archive.Open(missing)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("Open(missing dir) = %v, want fs.ErrNotExist naming %s", err, missing)
	}
}

// Create makes the directory, private to the owner.
func TestWriterCreatesDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := writeArchive(t, dir, testEvents(t)[:1])
	if filepath.Dir(path) != dir {
		t.Errorf("capture file %s is not in %s", path, dir)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("archive directory: %v %v, want 0700", fi.Mode(), err)
	}
	if _, err := archive.Create(path, archive.Options{}); err == nil {
		t.Error("Create in a path that is a file succeeded")
	}
}

// Beyond MaxPending, Append drops and counts events instead of waiting for the disk. Nothing is flushed
// here until Close (FlushInterval 1 h, FlushBytes out of reach), so the counts are exact; Close records
// the drops that no later Append could report as a LOST frame.
func TestWriterBackpressureAtClose(t *testing.T) {
	evs := replay(t, "workload.cap")[:10]
	var frames int
	for _, ev := range evs[:3] {
		frames += len(archive.AppendFrame(nil, ev))
	}
	dir := t.TempDir()
	w, err := archive.Create(dir, archive.Options{FlushInterval: time.Hour, FlushBytes: 1 << 30, MaxPending: frames})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		w.Append(ev)
	}
	if appended, dropped := w.Stats(); appended != 3 || dropped != 7 {
		t.Fatalf("Stats = %d appended, %d dropped; want 3, 7", appended, dropped)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	w.Append(evs[0]) // after Close: counted, never written
	if _, dropped := w.Stats(); dropped != 1 {
		t.Errorf("Append after Close: %d dropped, want 1", dropped)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	got, idx, err := readAll(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Fatalf("read %d events, want the 3 kept and a LOST frame", len(got))
	}
	checkEvents(t, got[:3], idx[:3], evs[:3])
	lost := got[3]
	if lost.Kind != audit.KindLost || lost.Lost != (audit.Lost{Reason: audit.LostLocal, Count: 7}) || !lost.EOE {
		t.Errorf("last frame %+v, want LOST local_drop count 7", lost)
	}
	if lost.Received == 0 || lost.Sec != lost.Received/1e9 {
		t.Errorf("LOST frame times: sec %d received %d", lost.Sec, lost.Received)
	}
}

// Append never waits for the disk: with nothing flushed for an hour, 100k appends complete (and all are
// written at Close).
func TestWriterAppendNeverBlocks(t *testing.T) {
	evs := replay(t, "workload.cap")
	dir := t.TempDir()
	w, err := archive.Create(dir, archive.Options{FlushInterval: time.Hour, FlushBytes: 1 << 30, MaxPending: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	const n = 100_000
	for i := range n {
		w.Append(evs[i%len(evs)])
	}
	if appended, dropped := w.Stats(); appended != n || dropped != 0 {
		t.Fatalf("Stats = %d, %d; want %d, 0", appended, dropped, n)
	}
	if size := fileSize(t, w.Path()); size != int64(len(fileMagic)) {
		t.Errorf("%d bytes on disk before Close, want only the header", size)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := archive.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for {
		ev, idx, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if idx != uint64(count) || ev.Serial != evs[count%len(evs)].Serial {
			t.Fatalf("event %d: index %d serial %d", count, idx, ev.Serial)
		}
		count++
	}
	if count != n {
		t.Errorf("read %d events, want %d", count, n)
	}
}

// A frame's layout is the documented one (docs/format.md): length, CRC-32C, payload.
func TestFrameLayout(t *testing.T) {
	ev := &audit.RawEvent{Kind: audit.KindEvent, Serial: 0x01020304, Sec: 5, Msec: 6, Received: 7, EOE: true, Late: true,
		Records: []audit.Record{{Type: 1300, Text: []byte("ab")}}}
	got := archive.AppendFrame([]byte("prefix"), ev)
	want := frameOf([]byte{
		1, 3, // kind, flags EOE|late
		4, 3, 2, 1, // serial
		5, 0, 0, 0, 0, 0, 0, 0, // sec
		6, 0, 0, 0, // msec
		7, 0, 0, 0, 0, 0, 0, 0, // received
		1,          // records
		0x14, 0x05, // type 1300
		2, 'a', 'b',
	})
	if !bytes.Equal(got, append([]byte("prefix"), want...)) {
		t.Errorf("AppendFrame:\n got % x\nwant % x", got[6:], want)
	}
	var back audit.RawEvent
	if err := archive.DecodeFrame(want[8:], &back); err != nil {
		t.Fatal(err)
	}
	if err := sameEvent(&back, ev); err != nil {
		t.Error(err)
	}
}

// DecodeFrame rejects each kind of malformed payload with an error, never a panic.
func TestFrameDecodeErrors(t *testing.T) {
	good := archive.AppendFrame(nil, &audit.RawEvent{Kind: audit.KindEvent, Records: []audit.Record{{Type: 1300, Text: []byte("abc")}}})[8:]
	lost := archive.AppendFrame(nil, &audit.RawEvent{Kind: audit.KindLost, Lost: audit.Lost{Reason: audit.LostGap, Count: 1}})[8:]
	header := func(kind byte) []byte { return append([]byte{kind}, make([]byte, 25)...) }
	for _, tc := range []struct {
		name    string
		payload []byte
		want    string
	}{
		{"empty", nil, "frame too short"},
		{"short", good[:25], "frame too short"},
		{"unknown kind, nothing after the header", header(0), "unknown frame kind 0"},
		{"unknown kind", append(header(3), 0), "unknown frame kind 3"},
		{"no record count", header(1), "bad record count"},
		{"LOST too short", append(header(2), 1, 2, 3), "LOST frame too short"},
		{"LOST without record count", lost[:len(lost)-1], "bad record count"},
		{"record count beyond the payload", append(header(1), 5), "bad record count"},
		{"truncated record", good[:len(good)-5], "truncated record"},
		{"record text cut", good[:len(good)-1], "bad record length"},
		{"trailing bytes", append(bytes.Clone(good), 0), "trailing bytes in frame"},
	} {
		var ev audit.RawEvent
		err := archive.DecodeFrame(tc.payload, &ev)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s: DecodeFrame(% x) = %v, want %q", tc.name, tc.payload, err, tc.want)
		}
	}
}
