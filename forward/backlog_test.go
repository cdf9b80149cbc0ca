package forward_test

import (
	"bytes"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/verify"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/forward"
	"github.com/auditarch/auditarch/internal/shiptest"
	"github.com/auditarch/auditarch/store"
)

// TestBacklogBound: while the store is away, the unshipped backlog grows to max_backlog; then events are
// dropped, counted and logged as an alarm, and once the store takes the backlog they are recorded as one
// LOST leaf (ship_backlog) with the exact count. Nothing already archived is lost.
func TestBacklogBound(t *testing.T) {
	h := newHost(t, "host-b.example")
	// The store's address is known before it runs: shipping starts against a closed port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	st := shiptest.StartStore(t, "", store.Config{}, h.pub)
	st.Stop() // it comes back on addr below
	st.Addr = addr
	var logs lockedBuffer
	w, err := writer.Create(h.dir, fastOptions(h.id))
	if err != nil {
		t.Fatal(err)
	}
	h.w = w
	h.restartShipper(forward.Config{Addr: addr, StoreKey: st.Key, Identity: h.id, Dir: h.dir, Writer: w, MaxBacklog: 32 << 10,
		MaxBackoff: 200 * time.Millisecond, Log: zerolog.New(&logs)})

	serial := uint32(0)
	appendFor := func(d time.Duration) {
		for end := time.Now().Add(d); time.Now().Before(end); {
			serial++
			h.w.Append(event(serial))
			time.Sleep(200 * time.Microsecond)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for !h.sh.Status().Shedding {
		appendFor(100 * time.Millisecond)
		if time.Now().After(deadline) {
			t.Fatalf("no shedding: backlog %d", h.sh.Status().Backlog)
		}
	}
	appended0, _, _ := h.w.Stats()
	appendFor(500 * time.Millisecond) // all shed
	appended1, _, _ := h.w.Stats()
	if appended1 != appended0 {
		t.Fatalf("events were archived while shedding: %d → %d", appended0, appended1)
	}
	if !strings.Contains(logs.String(), `"alarm":"backlog"`) {
		t.Fatalf("no backlog alarm in the log:\n%s", logs.String())
	}
	st.Start() // on the address the shipper dials
	deadline = time.Now().Add(20 * time.Second)
	for h.sh.Status().Shedding {
		if time.Now().After(deadline) {
			t.Fatalf("still shedding: backlog %d", h.sh.Status().Backlog)
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.stop(10 * time.Second)
	shiptest.SameFiles(t, h.dir, st.HostDir("host-b.example"))
	vk, _, _ := archive.LoadVerifierKey(h.pub)
	r, err := verify.Dir(h.dir, verify.Options{Key: vk})
	if err != nil || r.Status != verify.Pass {
		t.Fatalf("verify: %v %+v", err, r)
	}
	var shed uint64
	for _, l := range r.Lost {
		if l.Reason == "ship_backlog" {
			shed += l.Count
		}
	}
	appended, _, _ := h.w.Stats()
	events := appended - uint64(len(r.Lost))
	if shed == 0 || events+shed != uint64(serial) {
		t.Fatalf("LOST ship_backlog %d + archived events %d != %d appended", shed, events, serial)
	}
	t.Logf("%d events: %d archived, %d dropped while the backlog was over its bound (one LOST leaf)", serial, events, shed)
}

// lockedBuffer is a log sink the test can read while the shipper writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
