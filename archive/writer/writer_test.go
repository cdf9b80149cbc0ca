package writer_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/verify"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/internal/archivetest"
	"github.com/auditarch/auditarch/internal/capfile"
	"github.com/auditarch/auditarch/internal/keyfile"
)

// t0 is the replay clock's start.
const t0 = int64(1_700_000_000) * 1e9

// replay returns the events of a recorded kernel stream in ../../testdata.
func replay(t testing.TB, name string) []*audit.RawEvent {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "testdata", name))
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

// writeArchive appends evs in one run of a writer and closes it.
func writeArchive(t testing.TB, dir string, opts writer.Options, evs []*audit.RawEvent) {
	t.Helper()
	w, err := writer.Create(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		w.Append(ev)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if appended, dropped, _ := w.Stats(); appended != uint64(len(evs)) || dropped != 0 {
		t.Fatalf("Stats = %d appended, %d dropped; want %d, 0", appended, dropped, len(evs))
	}
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
		got.Received != want.Received || got.EOE != want.EOE || got.Late != want.Late || got.Lost != want.Lost {
		return fmt.Errorf("header differs: got %+v, want %+v", got, want)
	}
	if len(got.Records) != len(want.Records) {
		return fmt.Errorf("%d records, want %d", len(got.Records), len(want.Records))
	}
	for i := range got.Records {
		if got.Records[i].Type != want.Records[i].Type || !bytes.Equal(got.Records[i].Text, want.Records[i].Text) {
			return fmt.Errorf("record %d differs", i)
		}
	}
	return nil
}

func mustVerify(t testing.TB, dir string, pub string) *verify.Report {
	t.Helper()
	opts := verify.Options{}
	if pub != "" {
		v, _, err := archive.LoadVerifierKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		opts.Key = v
	}
	r, err := verify.Dir(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRoundTripAndVerify(t *testing.T) {
	id, pub := archivetest.Identity(t, "host-a.example")
	dir := filepath.Join(t.TempDir(), "arch")
	evs := testEvents(t)
	writeArchive(t, dir, writer.Options{Identity: id}, evs)
	got, idx, err := readAll(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(evs) {
		t.Fatalf("read %d events, wrote %d", len(got), len(evs))
	}
	for i := range evs {
		if err := sameEvent(got[i], evs[i]); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if idx[i] != uint64(i+1) { // leaf 0 is START
			t.Fatalf("event %d has index %d", i, idx[i])
		}
	}
	r := mustVerify(t, dir, pub)
	if r.Status != verify.Pass {
		t.Fatalf("verify: %s: %+v", r.Status, r.Problems)
	}
	// Second run, same directory: the index continues, the chain links.
	writeArchive(t, dir, writer.Options{Identity: id}, evs[:5])
	r = mustVerify(t, dir, pub)
	if r.Status != verify.Pass || len(r.Segments) != 2 || len(r.Runs) != 2 {
		t.Fatalf("verify after a second run: %s, %d segments, %d runs: %+v", r.Status, len(r.Segments), len(r.Runs), r.Problems)
	}
	want := uint64(len(evs)) + 3 + 5 + 3 // START, events, STOP, SEAL per run
	if r.Leaves != want || r.Verified != want {
		t.Fatalf("verify: %d leaves, %d verified; want %d", r.Leaves, r.Verified, want)
	}
}

// writeSlowly appends evs over about d, in a writer with fast options, and closes it.
func writeSlowly(t testing.TB, dir string, opts writer.Options, evs []*audit.RawEvent, d time.Duration) {
	t.Helper()
	w, err := writer.Create(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		w.Append(ev)
		time.Sleep(d / time.Duration(len(evs)))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestRotationEpochsHeartbeats(t *testing.T) {
	id, pub := archivetest.Identity(t, "host-a.example")
	dir := filepath.Join(t.TempDir(), "arch")
	evs := testEvents(t)
	writeSlowly(t, dir, archivetest.FastOptions(id), evs, 2500*time.Millisecond)
	r := mustVerify(t, dir, pub)
	if r.Status != verify.Pass {
		t.Fatalf("verify: %s: %+v", r.Status, r.Problems)
	}
	if len(r.Segments) < 3 {
		t.Fatalf("%d segments after 2.5 s of 0.7 s segments", len(r.Segments))
	}
	for _, s := range r.Segments {
		if !s.Sealed || s.Status != "PASS" || s.Verified != s.Leaves {
			t.Errorf("segment %+v", s)
		}
	}
	kinds := map[archive.LeafKind]int{}
	rd, err := archive.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		l, i, err := rd.NextLeaf()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if i != uint64(n) {
			t.Fatalf("leaf %d has index %d", n, i)
		}
		n++
		kinds[l.Kind]++
	}
	if kinds[archive.LeafKey] < 5 || kinds[archive.LeafSeal] != len(r.Segments) || kinds[archive.LeafStart] != 1 || kinds[archive.LeafStop] != 1 {
		t.Errorf("leaf kinds %v over %d segments", kinds, len(r.Segments))
	}
	got, _, err := readAll(t, dir)
	if err != nil || len(got) != len(evs) {
		t.Fatalf("read %d events (%v), wrote %d", len(got), err, len(evs))
	}
}

func TestHeartbeatsWhileIdle(t *testing.T) {
	id, pub := archivetest.Identity(t, "host-a.example")
	dir := filepath.Join(t.TempDir(), "arch")
	opts := archivetest.FastOptions(id)
	opts.SegmentDuration = time.Hour
	w, err := writer.Create(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	// While the writer runs, the archive verifies, with the writer shown as live.
	r := mustVerify(t, dir, pub)
	if r.Status != verify.Pass || !r.Live || r.Runs[0].Ended != "running" {
		t.Fatalf("live verify: %s live=%v %+v %+v", r.Status, r.Live, r.Runs, r.Problems)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	rd, _ := archive.Open(dir)
	beats := 0
	for {
		l, _, err := rd.NextLeaf()
		if err != nil {
			break
		}
		if l.Kind == archive.LeafHeartbeat {
			beats++
		}
	}
	if beats < 3 || beats > 6 {
		t.Errorf("%d heartbeats in 1 s at 200 ms", beats)
	}
}

func TestSkipOutsideUsesKernelTimes(t *testing.T) {
	id, _ := archivetest.Identity(t, "host-a.example")
	dir := filepath.Join(t.TempDir(), "arch")
	opts := archivetest.FastOptions(id)
	w, err := writer.Create(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	// Three segments whose events carry kernel times far from when they were written: old records the
	// kernel held back, or a replay.
	for _, sec := range []int64{1000, 2000, 3000} {
		for i := int64(0); i < 3; i++ {
			w.Append(&audit.RawEvent{Kind: audit.KindEvent, Serial: uint32(sec + i), Sec: sec + i, EOE: true, Received: time.Now().UnixNano()})
		}
		time.Sleep(opts.SegmentDuration + 100*time.Millisecond)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	read := func(since, until int64) []uint32 {
		r, err := archive.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		var s time.Time
		if since != 0 {
			s = time.Unix(since, 0)
		}
		r.SkipOutside(s, time.Unix(until, 0))
		var got []uint32
		for {
			ev, _, err := r.Next()
			if err == io.EOF {
				return got
			}
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, ev.Serial)
		}
	}
	// Each segment is read only when its events' span meets the window (the reader does not filter
	// single events: 2000..2002 all come back for 2001..2002).
	if got := read(1500, 2500); fmt.Sprint(got) != "[2000 2001 2002]" {
		t.Errorf("1500..2500 read %v", got)
	}
	if got := read(2001, 2002); fmt.Sprint(got) != "[2000 2001 2002]" {
		t.Errorf("2001..2002 read %v", got)
	}
	if got := read(0, 1001); fmt.Sprint(got) != "[1000 1001 1002]" {
		t.Errorf("..1001 read %v", got)
	}
	// The newest segment has no successor to vouch for its span: it is always read.
	w, err = writer.Create(dir, writer.Options{Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	w.Append(&audit.RawEvent{Kind: audit.KindEvent, Serial: 5000, Sec: 5000, EOE: true, Received: time.Now().UnixNano()})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := read(1500, 2500); fmt.Sprint(got) != "[2000 2001 2002 5000]" {
		t.Errorf("1500..2500 with an open newest segment read %v", got)
	}
}

func TestClockStepIsRecorded(t *testing.T) {
	id, pub := archivetest.Identity(t, "host-a.example")
	dir := filepath.Join(t.TempDir(), "arch")
	opts := archivetest.FastOptions(id)
	var step atomic.Int64
	opts.Now = func() time.Time { return time.Now().Add(time.Duration(step.Load())) }
	w, err := writer.Create(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	step.Store(int64(-time.Hour)) // someone sets the clock back an hour
	time.Sleep(100 * time.Millisecond)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	rd, _ := archive.Open(dir)
	var clocks []string
	for {
		l, _, err := rd.NextLeaf()
		if err != nil {
			break
		}
		if l.Kind == archive.LeafClock {
			clocks = append(clocks, string(l.Body))
		}
	}
	var c archive.Clock
	if len(clocks) != 1 || json.Unmarshal([]byte(clocks[0]), &c) != nil || (c.StepNanos+int64(time.Hour)) > int64(50*time.Millisecond) ||
		(c.StepNanos+int64(time.Hour)) < -int64(50*time.Millisecond) {
		t.Errorf("CLOCK leaves: %q, want one step of -1h", clocks)
	}
	if r := mustVerify(t, dir, pub); r.Status != verify.Pass {
		t.Errorf("verify: %s %+v", r.Status, r.Problems)
	}
}

func TestRefusesLoosePermissions(t *testing.T) {
	id, _ := archivetest.Identity(t, "host-a.example")
	dir := filepath.Join(t.TempDir(), "arch")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := writer.Create(dir, writer.Options{Identity: id}); !errors.Is(err, keyfile.ErrPermissions) {
		t.Errorf("Create on a 0755 directory: %v", err)
	}
	keys := filepath.Join(t.TempDir(), "keys")
	if _, err := archive.Keygen(keys, "host-a.example"); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(keys, archive.IdentityKeyFile)
	if err := os.Chmod(key, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := archive.LoadIdentity(key); !errors.Is(err, keyfile.ErrPermissions) {
		t.Errorf("LoadIdentity of a 0640 key: %v", err)
	}
	os.Chmod(key, 0o600)
	os.Chmod(keys, 0o750)
	if _, err := archive.LoadIdentity(key); !errors.Is(err, keyfile.ErrPermissions) {
		t.Errorf("LoadIdentity in a 0750 directory: %v", err)
	}
	os.Chmod(keys, 0o700)
	if _, err := archive.LoadIdentity(key); err != nil {
		t.Errorf("LoadIdentity 0600 in 0700: %v", err)
	}
}

func TestVerifyReportsSilences(t *testing.T) {
	id, pub := archivetest.Identity(t, "host-a.example")
	dir := filepath.Join(t.TempDir(), "arch")
	now := time.Now().UnixNano()
	// Two events 40 s apart by their receive times, with nothing between: the writer promised a
	// heartbeat every 10 s (the default), so 40 s of nothing means it was stopped or frozen.
	writeArchive(t, dir, writer.Options{Identity: id}, []*audit.RawEvent{
		{Kind: audit.KindEvent, Serial: 1, EOE: true, Received: now},
		{Kind: audit.KindEvent, Serial: 2, EOE: true, Received: now + int64(40*time.Second)},
	})
	r := mustVerify(t, dir, pub)
	if r.Status != verify.Incomplete || len(r.Problems) != 1 || r.Problems[0].Code != "silence" {
		t.Fatalf("verify: %s %+v", r.Status, r.Problems)
	}
	t.Log(r.Problems[0].Message)

	// A live writer that has written nothing for longer than heartbeat + grace is frozen.
	dir2 := filepath.Join(t.TempDir(), "arch")
	w, err := writer.Create(dir2, writer.Options{Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	v, _, _ := archive.LoadVerifierKey(pub)
	r, err = verify.Dir(dir2, verify.Options{Key: v, Now: time.Now().Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != verify.Incomplete || len(r.Problems) != 1 || r.Problems[0].Code != "silence" || !r.Live {
		t.Fatalf("verify of a frozen live writer: %s live=%v %+v", r.Status, r.Live, r.Problems)
	}
}

func TestOneWriterPerDirectory(t *testing.T) {
	id, _ := archivetest.Identity(t, "host-a.example")
	dir := filepath.Join(t.TempDir(), "arch")
	w, err := writer.Create(dir, writer.Options{Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writer.Create(dir, writer.Options{Identity: id}); !errors.Is(err, writer.ErrInUse) {
		t.Errorf("a second writer on the same directory: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w, err = writer.Create(dir, writer.Options{Identity: id})
	if err != nil {
		t.Fatalf("a writer after the first closed: %v", err)
	}
	w.Close()
}
