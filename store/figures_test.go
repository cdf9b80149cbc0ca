package store_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/internal/archivetest"
	"github.com/auditarch/auditarch/internal/shiptest"
	"github.com/auditarch/auditarch/store"
)

// TestHostFigures: after a host's archive is shipped, Hosts reports the leaves the store holds, the bytes
// and segment files of its area, its last receipt and the leaves it covers, the alarms raised about it by
// kind, and the same leaves and bytes after a restart (read from the area).
func TestHostFigures(t *testing.T) {
	id, pub := archivetest.Identity(t, "figures.example")
	st := shiptest.StartStore(t, "", store.Config{}, pub)
	start := time.Now()
	shiptest.ShipArchive(t, st, secOptions(id), 40, time.Millisecond)
	st.Server.Raise(store.AlarmUpload, id.Signer.Name(), "test alarm")
	st.Server.Raise(store.AlarmUpload, id.Signer.Name(), "test alarm") // held back by AlarmRepeat: counted
	st.Server.Raise(store.AlarmRefused, "", "a client that is no host")
	area := st.HostDir(id.Signer.Name())
	var size int64
	files, _ := filepath.Glob(filepath.Join(area, archive.SegmentPattern))
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		size += fi.Size()
	}
	_, _, leaves, _ := st.Server.Held(id.Signer.Name())
	check := func(when string, receipted bool) {
		t.Helper()
		var h, other *store.HostFigures
		for _, f := range st.Server.Hosts() {
			switch f.Origin {
			case id.Signer.Name():
				h = &f
			case "":
				other = &f
			}
		}
		if h == nil {
			t.Fatalf("%s: Hosts has no figures for %s", when, id.Signer.Name())
		}
		if h.Leaves != leaves || h.Bytes != size || h.Segments != len(files) || !h.Stopped {
			t.Errorf("%s: %d leaves, %d bytes, %d segments, stopped %v; want %d, %d, %d, true", when, h.Leaves, h.Bytes, h.Segments, h.Stopped, leaves, size, len(files))
		}
		if receipted && (h.LastReceipt.Before(start) || h.ReceiptLeaves != leaves) {
			t.Errorf("%s: last receipt at %v covering %d leaves; want after %v, %d", when, h.LastReceipt, h.ReceiptLeaves, start, leaves)
		}
		if receipted && (h.Alarms[store.AlarmUpload] != 2 || other == nil || other.Alarms[store.AlarmRefused] != 1) {
			t.Errorf("%s: alarms %v, others' %v; want 2 upload, 1 refused", when, h.Alarms, other)
		}
	}
	// The alarm held back (AlarmRepeat) is raised, and counted, when the store stops.
	st.Stop()
	check("after shipping", true)
	st.Start()
	check("after a restart", false)
}
