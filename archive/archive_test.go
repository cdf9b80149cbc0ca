package archive_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/internal/capfile"
)

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

// identity makes a host identity key in a new directory and returns it with its public key file.
func identity(t testing.TB, origin string) (*archive.Identity, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "keys")
	if _, err := archive.Keygen(dir, origin); err != nil {
		t.Fatal(err)
	}
	id, err := archive.LoadIdentity(filepath.Join(dir, archive.IdentityKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return id, filepath.Join(dir, archive.IdentityPubFile)
}

// writeArchive appends evs in one run of a writer and closes it.
func writeArchive(t testing.TB, dir string, opts archive.Options, evs []*audit.RawEvent) {
	t.Helper()
	w, err := archive.Create(dir, opts)
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

func mustVerify(t testing.TB, dir string, pub string) *archive.Report {
	t.Helper()
	opts := archive.VerifyOptions{}
	if pub != "" {
		v, _, err := archive.LoadVerifierKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		opts.Key = v
	}
	r, err := archive.Verify(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRoundTripAndVerify(t *testing.T) {
	id, pub := identity(t, "host-a.example")
	dir := filepath.Join(t.TempDir(), "arch")
	evs := testEvents(t)
	writeArchive(t, dir, archive.Options{Identity: id}, evs)
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
	if r.Status != archive.Pass {
		t.Fatalf("verify: %s: %+v", r.Status, r.Problems)
	}
	// Second run, same directory: the index continues, the chain links.
	writeArchive(t, dir, archive.Options{Identity: id}, evs[:5])
	r = mustVerify(t, dir, pub)
	if r.Status != archive.Pass || len(r.Segments) != 2 || len(r.Runs) != 2 {
		t.Fatalf("verify after a second run: %s, %d segments, %d runs: %+v", r.Status, len(r.Segments), len(r.Runs), r.Problems)
	}
	want := uint64(len(evs)) + 3 + 5 + 3 // START, events, STOP, SEAL per run
	if r.Leaves != want || r.Verified != want {
		t.Fatalf("verify: %d leaves, %d verified; want %d", r.Leaves, r.Verified, want)
	}
	_ = errors.Is
	_ = time.Second
}

// fastOptions cut segments, epochs, checkpoints and heartbeats in fractions of a second.
func fastOptions(id *archive.Identity) archive.Options {
	return archive.Options{Identity: id, SegmentDuration: 700 * time.Millisecond, EpochDuration: 300 * time.Millisecond,
		CheckpointInterval: 50 * time.Millisecond, HeartbeatInterval: 200 * time.Millisecond, FlushInterval: 20 * time.Millisecond}
}

// writeSlowly appends evs over about d, in a writer with fast options, and closes it.
func writeSlowly(t testing.TB, dir string, opts archive.Options, evs []*audit.RawEvent, d time.Duration) {
	t.Helper()
	w, err := archive.Create(dir, opts)
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
	id, pub := identity(t, "host-a.example")
	dir := filepath.Join(t.TempDir(), "arch")
	evs := testEvents(t)
	writeSlowly(t, dir, fastOptions(id), evs, 2500*time.Millisecond)
	r := mustVerify(t, dir, pub)
	if r.Status != archive.Pass {
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
	id, pub := identity(t, "host-a.example")
	dir := filepath.Join(t.TempDir(), "arch")
	opts := fastOptions(id)
	opts.SegmentDuration = time.Hour
	w, err := archive.Create(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	// While the writer runs, the archive verifies, with the writer shown as live.
	r := mustVerify(t, dir, pub)
	if r.Status != archive.Pass || !r.Live || r.Runs[0].Ended != "running" {
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
