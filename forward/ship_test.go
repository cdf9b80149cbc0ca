package forward_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/receipt"
	"github.com/auditarch/auditarch/archive/verify"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/forward"
	"github.com/auditarch/auditarch/internal/archivetest"
	"github.com/auditarch/auditarch/internal/shiptest"
	"github.com/auditarch/auditarch/store"
)

// fastOptions cut segments, epochs, checkpoints and heartbeats in fractions of a second.
func fastOptions(id *archive.Identity) writer.Options {
	return writer.Options{Identity: id, SegmentDuration: 700 * time.Millisecond, EpochDuration: 300 * time.Millisecond,
		HeartbeatInterval: 200 * time.Millisecond, FlushInterval: 10 * time.Millisecond}
}

func event(serial uint32) *audit.RawEvent {
	now := time.Now().UnixNano()
	sec, msec := now/1e9, int32(now%1e9/1e6)
	stamp := fmt.Sprintf("audit(%d.%03d:%d): ", sec, msec, serial)
	return &audit.RawEvent{Kind: audit.KindEvent, Serial: serial, Sec: sec, Msec: msec, Received: now, EOE: true,
		Records: []audit.Record{{Type: 1300, Text: []byte(stamp + fmt.Sprintf("arch=c000003e syscall=257 success=yes exit=3 pid=%d comm=\"cat\"", serial))}}}
}

// host is a writer and a shipper over one archive.
type host struct {
	t      *testing.T
	dir    string
	id     *archive.Identity
	pub    string
	w      *writer.Writer
	sh     *forward.Shipper
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	acks   []forward.Ack
}

func newHost(t *testing.T, origin string) *host {
	id, pub := archivetest.Identity(t, origin)
	return &host{t: t, dir: filepath.Join(t.TempDir(), "archive"), id: id, pub: pub}
}

func (h *host) start(st *shiptest.Store, opts writer.Options, fcfg forward.Config) {
	h.t.Helper()
	w, err := writer.Create(h.dir, opts)
	if err != nil {
		h.t.Fatal(err)
	}
	fcfg.Addr, fcfg.StoreKey, fcfg.Identity, fcfg.Dir, fcfg.Writer = st.Addr, st.Key, h.id, h.dir, w
	fcfg.MaxBackoff = 200 * time.Millisecond
	fcfg.OnAck = func(a forward.Ack) { h.mu.Lock(); h.acks = append(h.acks, a); h.mu.Unlock() }
	fcfg.Log = zerolog.New(zerolog.NewTestWriter(h.t)).Level(zerolog.WarnLevel)
	sh, err := forward.New(fcfg)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.w, h.sh, h.cancel, h.done = w, sh, cancel, make(chan struct{})
	go func() { sh.Run(ctx); close(h.done) }()
}

// restartShipper runs a new shipper over the same writer.
func (h *host) restartShipper(fcfg forward.Config) {
	h.t.Helper()
	fcfg.OnAck = func(a forward.Ack) { h.mu.Lock(); h.acks = append(h.acks, a); h.mu.Unlock() }
	sh, err := forward.New(fcfg)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.sh, h.cancel, h.done = sh, cancel, make(chan struct{})
	go func() { sh.Run(ctx); close(h.done) }()
}

// stop closes the writer, waits until the store has everything, and stops the shipper.
func (h *host) stop(wait time.Duration) {
	h.t.Helper()
	if err := h.w.Close(); err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	err := h.sh.WaitShipped(ctx, h.w.Durable())
	h.cancel()
	<-h.done
	if err != nil {
		h.t.Fatalf("not shipped: %v", err)
	}
}

// TestShipEndToEnd: events stream to the store while they are archived; the store's copy is byte for byte
// the host's, verifies, and the receipts verify against the store key.
func TestShipEndToEnd(t *testing.T) {
	h := newHost(t, "host-a.example")
	st := shiptest.StartStore(t, "", store.Config{}, h.pub)
	h.start(st, fastOptions(h.id), forward.Config{})
	for i := 1; i <= 2000; i++ {
		h.w.Append(event(uint32(i)))
		if i%100 == 0 {
			time.Sleep(50 * time.Millisecond)
		}
	}
	h.stop(10 * time.Second)
	shiptest.SameFiles(t, h.dir, st.HostDir("host-a.example"))
	vk, _, _ := archive.LoadVerifierKey(h.pub)
	for _, dir := range []string{h.dir, st.HostDir("host-a.example")} {
		r, err := verify.Dir(dir, verify.Options{Key: vk})
		if err != nil || r.Status != verify.Pass {
			t.Fatalf("verify %s: %v %+v", dir, err, r)
		}
	}
	rs, bad, err := receipt.Read(filepath.Join(h.dir, "receipts"), st.Key)
	if err != nil || bad != 0 || len(rs) == 0 {
		t.Fatalf("receipts: %d, %d bad, %v", len(rs), bad, err)
	}
	newest, _ := receipt.Newest(rs)
	r, _ := verify.Dir(h.dir, verify.Options{Key: vk})
	if newest.Checkpoint.Size != r.Leaves {
		t.Fatalf("newest receipt covers %d leaves, the archive has %d", newest.Checkpoint.Size, r.Leaves)
	}
	if !slices.Equal(shiptest.Leaves(t, h.dir), shiptest.Leaves(t, st.HostDir("host-a.example"))) {
		t.Fatal("leaf sets differ")
	}
	h.mu.Lock()
	t.Logf("%d acks, %d receipts", len(h.acks), len(rs))
	h.mu.Unlock()
	// Sealed segments are immutable in the store where the filesystem allows it.
	segs, _ := filepath.Glob(filepath.Join(st.HostDir("host-a.example"), "seg-*.aseg"))
	imm, err := store.IsImmutable(segs[0])
	if err == nil && !imm && os.Geteuid() == 0 {
		t.Errorf("sealed segment %s is not immutable", segs[0])
	}
}

// TestResetArchiveRefused: a host ships, then its archive is reset (a new one, the key kept) and shipped
// to the same store. The store refuses it (another history for this key); the shipper says so once, stops
// retrying, and marks its status Refused; the store's copy is untouched.
func TestResetArchiveRefused(t *testing.T) {
	h := newHost(t, "host-r.example")
	st := shiptest.StartStore(t, "", store.Config{}, h.pub)
	h.start(st, fastOptions(h.id), forward.Config{})
	for i := 1; i <= 200; i++ {
		h.w.Append(event(uint32(i)))
	}
	h.stop(10 * time.Second)
	held := shiptest.Leaves(t, st.HostDir("host-r.example"))

	h.dir = filepath.Join(t.TempDir(), "archive") // reset: a new archive, the same key
	var logBuf bytes.Buffer
	var mu sync.Mutex
	w, err := writer.Create(h.dir, fastOptions(h.id))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := 1; i <= 50; i++ {
		w.Append(event(uint32(i)))
	}
	sh, err := forward.New(forward.Config{Addr: st.Addr, StoreKey: st.Key, Identity: h.id, Dir: h.dir, Writer: w,
		MaxBackoff: 50 * time.Millisecond, Log: zerolog.New(lockedWriter{&mu, &logBuf})})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sh.Run(ctx); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for !sh.Status().Refused && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !sh.Status().Refused {
		t.Fatalf("the shipper did not stop on the store's refusal: %+v", sh.Status())
	}
	time.Sleep(500 * time.Millisecond) // ten backoffs: none may be taken
	cancel()
	<-done
	mu.Lock()
	out := logBuf.String()
	mu.Unlock()
	if n := strings.Count(out, forward.ErrOtherHistory.Error()); n != 1 {
		t.Errorf("the refusal was said %d times, want once:\n%s", n, out)
	}
	if strings.Contains(out, "shipping to the store interrupted") || !strings.Contains(out, "new key") {
		t.Errorf("retried after the refusal, or no hint:\n%s", out)
	}
	if got := shiptest.Leaves(t, st.HostDir("host-r.example")); !slices.Equal(got, held) {
		t.Errorf("the store's copy changed: %d leaves, had %d", len(got), len(held))
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
