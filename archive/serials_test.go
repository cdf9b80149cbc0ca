package archive_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/audit/raw"
	"github.com/auditarch/auditarch/internal/archivetest"
)

// TestScanSerials: the scan finds the last serial of the boot and the gaps no LOST leaf covers, back to
// the last run that stopped cleanly (whose gaps its own LOST leaves account for).
func TestScanSerials(t *testing.T) {
	id, _ := archivetest.Keys(t, "host-a.example")
	dir := filepath.Join(t.TempDir(), "arch")
	run := func(serials []uint32, lost *raw.Lost) {
		w, err := writer.Create(dir, archivetest.FastOptions(id))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range serials {
			w.Append(archivetest.Event(s))
		}
		if lost != nil {
			now := time.Now().UnixNano()
			w.Append(&raw.Event{Kind: raw.KindLost, EOE: true, Sec: now / 1e9, Received: now, Lost: *lost})
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	boot := time.Now().Add(-time.Hour)
	check := func(want string) {
		t.Helper()
		s, err := archive.ScanSerials(dir, boot)
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprintf("last %d missing %v", s.Last, s.Missing); got != want || (s.Last != 0 && s.LastLeaf == 0) {
			t.Errorf("ScanSerials = %s (last leaf %d), want %s", got, s.LastLeaf, want)
		}
	}
	run([]uint32{1, 2, 3, 7, 8, 12}, &raw.Lost{Reason: raw.LostGap, Count: 3, First: 4, Last: 6})
	check("last 12 missing [[9 11]]") // (a clean run reports its own gaps; this one's LOST missed 9..11)
	run([]uint32{20, 22}, &raw.Lost{Reason: raw.LostUnregistered, Count: 7, First: 13, Last: 19})
	// Every run here stopped cleanly: the scan ends at the newest STOP, which holds 20 and 22.
	check("last 22 missing [[21 21]]")

	// A boot after every event: nothing is this boot's.
	boot = time.Now().Add(time.Hour)
	check("last 0 missing []")
}
