package retain_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/archive/retain"
	"github.com/auditarch/auditarch/archive/verify"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/internal/archivetest"
	"github.com/auditarch/auditarch/internal/privtest"
)

// syncBuf is a log both the writer and the test touch.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDiskFullPrunesBeforeDropping runs a writer on a small tmpfs that another file fills, after the store
// acknowledged its older segments. The writer asks retention for room before it holds and drops events:
// the segments the store holds go, every event is written (none dropped, MaxPending is far below what
// follows), the run stops cleanly, and the archive verifies PASS on the store's receipt.
func TestDiskFullPrunesBeforeDropping(t *testing.T) {
	privtest.Root(t)
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=2m,mode=0700"); err != nil {
		privtest.Unavailable(t, "mount a tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	id, key := archivetest.Keys(t, origin)
	store, sv := archivetest.Store(t, "auditarch-store/test")
	f := &fixture{dir: filepath.Join(mnt, "arch"), id: id, key: key, store: store, sv: sv}
	var log syncBuf
	opts := archivetest.FastOptions(id)
	opts.MaxPending = 64 << 10
	opts.Log = zerolog.New(&log)
	w, err := writer.Create(f.dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	p := f.pruner(t, retain.Options{}) // no keep, no budget: only a full disk prunes
	w.SetPrune(func(need int64) int64 {
		res, err := p.Prune(need)
		if err != nil {
			t.Errorf("prune: %v", err)
		}
		return res.Freed
	})
	serial := uint32(0)
	for range 300 { // several segments
		serial++
		w.Append(archivetest.Event(serial))
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	cks := checkpoints(t, f.dir)
	f.ship(t, store, cks[len(cks)-1].note)
	before := len(archivetest.SegFiles(t, f.dir))

	filler, err := os.OpenFile(filepath.Join(mnt, "filler"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{64 << 10, 4096, 1} {
		for zeros := make([]byte, n); ; {
			if _, err := filler.Write(zeros); err != nil {
				if !errors.Is(err, unix.ENOSPC) {
					t.Fatalf("filler: %v", err)
				}
				break
			}
		}
	}
	filler.Close()
	for range 1000 { // ~200 KiB of leaves: beyond MaxPending unless the disk takes them
		serial++
		w.Append(archivetest.Event(serial))
		if serial%100 == 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v\n%s", err, log.String())
	}
	_, dropped, _ := w.Stats()
	after := len(archivetest.SegFiles(t, f.dir))
	if dropped != 0 || !strings.Contains(log.String(), "retention removed segments") {
		t.Fatalf("dropped %d, segments %d then %d; log:\n%s", dropped, before, after, log.String())
	}
	r := f.verify(t, sv)
	if r.Status != verify.Pass || r.Pruned == nil || r.Pruned.Status != verify.PruneAttested {
		t.Fatalf("verify: %s %+v, pruned %+v", r.Status, r.Problems, r.Pruned)
	}
	t.Logf("segments %d, then %d; pruned %+v; %d leaves from %d", before, after, r.Pruned, r.Leaves, r.FirstIndex)
}
