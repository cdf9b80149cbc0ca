package store_test

// Security tests: what a client that is not an honest enrolled host can try against the store. Each attack
// must be refused with a clear error, logged (the store's log and an alarm in alarms.log), and leave the
// attacked host's area byte for byte as the honest host shipped it, so that it still verifies PASS
// under the host's pinned key and the honest host can continue.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/rs/zerolog"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/receipt"
	"github.com/auditarch/auditarch/archive/verify"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/forward"
	"github.com/auditarch/auditarch/internal/archivetest"
	"github.com/auditarch/auditarch/internal/shiptest"
	"github.com/auditarch/auditarch/internal/wire"
	"github.com/auditarch/auditarch/store"
)

const (
	originA = "host-a.example"
	originB = "host-b.example"
)

// TestRefuseNoCertificate: a client without a certificate fails at the handshake or its first read, and
// the store logs the refusal and raises an alarm.
func TestRefuseNoCertificate(t *testing.T) {
	_, pubA := archivetest.Identity(t, originA)
	st := shiptest.StartStore(t, "", store.Config{}, pubA)

	c, err := secDial(st, nil)
	if err == nil {
		defer c.c.Close()
		_, err = c.hello(originA)
	}
	var re *wire.RemoteError
	if err == nil || errors.As(err, &re) {
		t.Fatalf("a client without a certificate got this far: %v", err)
	}
	t.Logf("client: %v", err)
	a := secWaitAlarm(t, st, store.AlarmRefused, "")
	if !strings.Contains(a.Message, "certificate") {
		t.Errorf("alarm does not say why: %+v", a)
	}
	st.Stop()
	secLogHas(t, st, "the handshake failure", func(m map[string]any) bool {
		return m["level"] == "warn" && strings.Contains(fmt.Sprint(m["message"]), "TLS handshake failed")
	})
	secAlarmsFileHas(t, st, store.AlarmRefused, "")
	secNoSegments(t, st.HostDir(originA))
}

// TestRefuseUnenrolledCertificate: a self-signed certificate for a key that is not enrolled is refused at
// the handshake.
func TestRefuseUnenrolledCertificate(t *testing.T) {
	_, pubA := archivetest.Identity(t, originA)
	// An identity named like host A, but another key: only the enrolled key counts, not the name.
	mallory, _ := archivetest.Identity(t, originA)
	st := shiptest.StartStore(t, "", store.Config{}, pubA)

	c, err := secDial(st, mallory)
	if err == nil {
		defer c.c.Close()
		_, err = c.hello(originA)
	}
	var re *wire.RemoteError
	if err == nil || errors.As(err, &re) {
		t.Fatalf("a client with an unenrolled key got this far: %v", err)
	}
	t.Logf("client: %v", err)
	a := secWaitAlarm(t, st, store.AlarmRefused, "")
	if !strings.Contains(a.Message, "not an enrolled host") {
		t.Errorf("alarm does not say why: %+v", a)
	}
	st.Stop()
	secLogHas(t, st, "the refused key", func(m map[string]any) bool {
		return m["alarm"] == store.AlarmRefused && strings.Contains(fmt.Sprint(m["message"]), "not an enrolled host")
	})
	secAlarmsFileHas(t, st, store.AlarmRefused, "")
	secNoSegments(t, st.HostDir(originA))
}

// TestRefuseOtherHostsCertificate: enrolled host B cannot speak for host A, neither by naming A in its
// HELLO nor by sending A's segments as its own.
func TestRefuseOtherHostsCertificate(t *testing.T) {
	fx := newSecFixture(t)
	t.Run("hello names another host", func(t *testing.T) {
		c := fx.dial(t, fx.idB)
		_, err := c.hello(originA)
		secRemoteCode(t, err, wire.CodeUnknownHost)
		a := secWaitAlarm(t, fx.st, store.AlarmRefused, originB)
		if !strings.Contains(a.Message, originA) {
			t.Errorf("alarm does not name the host claimed: %+v", a)
		}
		fx.unchanged(t)
	})
	t.Run("another host's segments", func(t *testing.T) {
		c := fx.dial(t, fx.idB)
		state, err := c.hello(originB)
		if err != nil {
			t.Fatal(err)
		}
		if state.Segment != "" || state.Offset != 0 {
			t.Fatalf("host B's area is not empty: %+v", state)
		}
		name := fx.heldSegments[0]
		data := fx.held[name][:min(len(fx.held[name]), wire.MaxData)]
		c.send(t, 1, name, 0, data)
		re := c.refused(t, wire.CodeTampered)
		if !strings.Contains(re.Message, "[origin]") {
			t.Errorf("ERROR does not give the origin problem: %v", re)
		}
		a := secWaitAlarm(t, fx.st, store.AlarmTampered, originB)
		if !strings.Contains(a.Message, "[origin]") {
			t.Errorf("alarm does not give the origin problem: %+v", a)
		}
		secEvidence(t, fx.st.HostDir(originB), wire.CodeTampered, name, 0, data)
		secNoSegments(t, fx.st.HostDir(originB))
		fx.unchanged(t)
	})
	fx.finish(t)
}

// TestRefuseRewrittenHistory: a client with host A's key (a stolen key, or the host itself compromised)
// can neither rewrite bytes the store holds nor append bytes that do not verify; the area stays as the
// honest host shipped it, which then continues where it was.
func TestRefuseRewrittenHistory(t *testing.T) {
	fx := newSecFixture(t)
	t.Run("fork", func(t *testing.T) {
		c := fx.dial(t, fx.idA)
		state, err := c.hello(originA)
		if err != nil {
			t.Fatal(err)
		}
		if state.Segment != fx.end.Segment || state.Offset != fx.end.Offset {
			t.Fatalf("STATE %+v, the honest host shipped up to %+v", state, fx.end)
		}
		name := fx.heldSegments[0]
		held := fx.held[name]
		off := int64(len(held) / 2)
		data := bytes.Clone(held[off:min(int(off)+4096, len(held))])
		data[len(data)/2] ^= 0x01
		c.send(t, 1, name, off, data)
		c.refused(t, wire.CodeFork)
		a := secWaitAlarm(t, fx.st, store.AlarmFork, originA)
		t.Logf("alarm: %s", a.Message)
		secEvidence(t, fx.st.HostDir(originA), wire.CodeFork, name, off, data)
		fx.unchanged(t)
	})
	t.Run("damaged block", func(t *testing.T) {
		// The next block the honest host wrote, with a byte flipped: its CRC no longer matches.
		name, off, next := fx.next(t)
		start := secFirstBlock(off)
		data := bytes.Clone(next[:secBlockEnd(t, next, start)])
		data[start+8+1] ^= 0x01
		c := fx.dial(t, fx.idA)
		if _, err := c.hello(originA); err != nil {
			t.Fatal(err)
		}
		c.send(t, 1, name, off, data)
		re := c.refused(t, wire.CodeTampered)
		if !strings.Contains(re.Message, "[damaged]") {
			t.Errorf("ERROR does not give the damaged problem: %v", re)
		}
		secWaitAlarms(t, fx.st, store.AlarmTampered, originA, 1)
		secEvidence(t, fx.st.HostDir(originA), wire.CodeTampered, name, off, data)
		fx.unchanged(t)
	})
	t.Run("altered leaf", func(t *testing.T) {
		// A leaf of the honest host's next bytes altered inside its block, the block compressed again and
		// its CRC recomputed: only the checkpoint after it, which the host's epoch key signed, can tell.
		name, off, next := fx.next(t)
		data := secAlterLeaf(t, next, secFirstBlock(off))
		c := fx.dial(t, fx.idA)
		if _, err := c.hello(originA); err != nil {
			t.Fatal(err)
		}
		c.send(t, 1, name, off, data)
		re := c.refused(t, wire.CodeTampered)
		if !strings.Contains(re.Message, "[root]") {
			t.Errorf("ERROR does not give the root problem: %v", re)
		}
		a := secWaitAlarms(t, fx.st, store.AlarmTampered, originA, 2)
		t.Logf("alarm: %s", a[1].Message)
		secEvidence(t, fx.st.HostDir(originA), wire.CodeTampered, name, off, data)
		fx.unchanged(t)
	})
	t.Run("gap", func(t *testing.T) {
		// Bytes past the end of the store's copy: not taken (no alarm: nothing contradicts the copy).
		name, off, next := fx.next(t)
		c := fx.dial(t, fx.idA)
		if _, err := c.hello(originA); err != nil {
			t.Fatal(err)
		}
		c.send(t, 1, name, off+100, next[100:])
		c.refused(t, wire.CodeGap)
		fx.unchanged(t)
	})
	fx.finish(t)
	fx.st.Stop()
	secLogHas(t, fx.st, "the refused gap", func(m map[string]any) bool {
		return m["level"] == "warn" && m["code"] == wire.CodeGap && m["host"] == originA
	})
	for _, kind := range []string{store.AlarmFork, store.AlarmTampered} {
		secLogHas(t, fx.st, "the "+kind+" alarm", func(m map[string]any) bool { return m["alarm"] == kind && m["host"] == originA })
		secAlarmsFileHas(t, fx.st, kind, originA)
	}
}

// TestRefuseReplay: DATA frames identical to bytes the store holds, sent again on a new connection, are a
// replay: refused, alarmed, and nothing is written (not even evidence).
func TestRefuseReplay(t *testing.T) {
	fx := newSecFixture(t)
	name := fx.heldSegments[0]
	held := fx.held[name]
	cases := []struct {
		name     string
		off, end int
	}{
		{"first frame", 0, min(len(held), wire.MaxData)},
		{"middle", len(held) / 3, len(held) / 2},
		{"up to the end held", max(0, len(held)-1000), len(held)},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := fx.dial(t, fx.idA)
			if _, err := c.hello(originA); err != nil {
				t.Fatal(err)
			}
			c.send(t, 1, name, int64(tc.off), held[tc.off:tc.end])
			c.refused(t, wire.CodeReplay)
			secWaitAlarms(t, fx.st, store.AlarmReplay, originA, i+1)
			if _, err := os.Stat(filepath.Join(fx.st.HostDir(originA), store.EvidenceDir)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a replay left evidence (%v): identical bytes need none", err)
			}
			fx.unchanged(t)
		})
	}
	fx.finish(t)
	fx.st.Stop()
	secLogHas(t, fx.st, "the replay alarm", func(m map[string]any) bool { return m["alarm"] == store.AlarmReplay && m["host"] == originA })
	secAlarmsFileHas(t, fx.st, store.AlarmReplay, originA)
}

// TestRefusePathAsSegmentName: a DATA frame's segment name is a file name in the host's area. A path
// must not reach another host's area or the store's own files (before the name was checked, a name
// like ../../store.key let an enrolled host read the store key byte by byte: replay or fork told whether
// a guessed byte matched; and ../host-b.example/seg-… appended to host B's area).
func TestRefusePathAsSegmentName(t *testing.T) {
	fx := newSecFixture(t)
	key, err := os.ReadFile(filepath.Join(fx.st.Dir, store.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		name string
		data []byte
	}{
		{"../../" + store.KeyFile, key[:1]},
		{"../" + originB + "/" + fx.heldSegments[0], fx.held[fx.heldSegments[0]][:100]},
		{"seg-99999999999999999999-29991231T235959Z.aseg/../../" + originB + "/x.aseg", []byte(secMagic)},
		{"notes.txt", []byte("x")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fx.dial(t, fx.idA)
			if _, err := c.hello(originA); err != nil {
				t.Fatal(err)
			}
			c.send(t, 1, tc.name, 0, tc.data)
			c.refused(t, wire.CodeProtocol)
			a := secWaitAlarms(t, fx.st, store.AlarmRefused, originA, i+1)
			if !strings.Contains(a[i].Message, "not a segment file name") {
				t.Errorf("alarm does not say why: %+v", a[i])
			}
			fx.unchanged(t)
			secNoSegments(t, fx.st.HostDir(originB))
			if ents, _ := os.ReadDir(fx.st.HostDir(originB)); len(ents) != 2 { // host.pub, receipts
				t.Errorf("host B's area holds %d files", len(ents))
			}
		})
	}
	fx.finish(t)
}

// TestRefuseWrongStoreKey: a shipper that pins another store's key sends nothing to a store with a
// different key: its connection fails with ErrStoreKey, and it logs that.
func TestRefuseWrongStoreKey(t *testing.T) {
	idA, pubA := archivetest.Identity(t, originA)
	st := shiptest.StartStore(t, "", store.Config{}, pubA)
	vkey, err := receipt.CosignerKeygen(filepath.Join(t.TempDir(), "other-store"), "other-store")
	if err != nil {
		t.Fatal(err)
	}
	other, err := receipt.NewCosignVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "archive")
	w, err := writer.Create(dir, secOptions(idA))
	if err != nil {
		t.Fatal(err)
	}
	var logBuf secBuffer
	sh, err := forward.New(forward.Config{Addr: st.Addr, StoreKey: other, Identity: idA, Dir: dir, Writer: w,
		Log: zerolog.New(&logBuf), MinBackoff: 50 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sh.Run(ctx); close(done) }()
	for i := 1; i <= 50; i++ {
		w.Append(secEvent(uint32(i)))
		time.Sleep(2 * time.Millisecond)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	err = sh.WaitShipped(wctx, w.Durable())
	wcancel()
	status := sh.Status()
	cancel()
	<-done
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, forward.ErrStoreKey) {
		t.Fatalf("WaitShipped: %v; want the deadline and ErrStoreKey", err)
	}
	t.Logf("shipper: %v", err)
	if status.Connected || status.LastError == "" {
		t.Errorf("status %+v", status)
	}
	secNoSegments(t, st.HostDir(originA))
	if fi, err := os.Stat(filepath.Join(st.HostDir(originA), store.ReceiptsFile)); err != nil || fi.Size() != 0 {
		t.Errorf("store receipts: %v, %v", fi, err)
	}
	var found bool
	for _, line := range bytes.Split(logBuf.Bytes(), []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(line, &m) == nil && m["level"] == "error" && m["alarm"] == "ship" &&
			strings.Contains(fmt.Sprint(m["error"]), forward.ErrStoreKey.Error()) {
			found = true
		}
	}
	if !found {
		t.Errorf("the shipper did not log the store key refusal:\n%s", logBuf.Bytes())
	}
	// The store saw the host turn it down, and let nothing through.
	st.Stop()
	secLogHas(t, st, "the failed handshake", func(m map[string]any) bool {
		return strings.Contains(fmt.Sprint(m["message"]), "TLS handshake failed")
	})
	secLogHasNot(t, st, "a host connected", func(m map[string]any) bool { return m["message"] == "host connected" })
}

// secFixture is a store with two enrolled hosts: A has shipped part of its archive honestly (its shipper
// is stopped and its writer has written more since), B nothing.
type secFixture struct {
	st           *shiptest.Store
	idA, idB     *archive.Identity
	pubA         string
	dir          string // host A's archive
	w            *writer.Writer
	serial       uint32
	end          archive.Position  // where the store's copy of A ends
	heldSegments []string          // the segment files the store holds of A, in order
	held         map[string][]byte // and their bytes
	snapshot     map[string][]byte // every file of A's area but evidence/, as the honest host left it
}

func newSecFixture(t *testing.T) *secFixture {
	t.Helper()
	fx := &secFixture{dir: filepath.Join(t.TempDir(), "archive")}
	var pubB string
	fx.idA, fx.pubA = archivetest.Identity(t, originA)
	fx.idB, pubB = archivetest.Identity(t, originB)
	// Every refusal raises its own alarm here; alarms held back by AlarmRepeat: limits_test.go.
	fx.st = shiptest.StartStore(t, "", store.Config{AlarmRepeat: time.Nanosecond}, fx.pubA, pubB)
	w, err := writer.Create(fx.dir, secOptions(fx.idA))
	if err != nil {
		t.Fatal(err)
	}
	fx.w = w
	t.Cleanup(func() { fx.w.Close() })
	stop := fx.ship(t)
	fx.write(300)
	fx.end = fx.w.Durable()
	stop(fx.end)
	// More after what the store holds: the honest bytes the attacks start from.
	fx.write(200)
	fx.held = map[string][]byte{}
	for _, name := range secSegments(t, fx.st.HostDir(originA)) {
		b, err := os.ReadFile(filepath.Join(fx.st.HostDir(originA), name))
		if err != nil {
			t.Fatal(err)
		}
		fx.heldSegments = append(fx.heldSegments, name)
		fx.held[name] = b
	}
	if len(fx.heldSegments) == 0 || fx.heldSegments[len(fx.heldSegments)-1] != fx.end.Segment ||
		int64(len(fx.held[fx.end.Segment])) != fx.end.Offset {
		t.Fatalf("the store holds %v, the host shipped up to %+v", fx.heldSegments, fx.end)
	}
	fx.snapshot = secAreaFiles(t, fx.st.HostDir(originA))
	return fx
}

// secOptions checkpoint every 30 ms; segments are cut every hour (tests hold to no particular cut).
func secOptions(id *archive.Identity) writer.Options {
	return writer.Options{Identity: id, EpochDuration: 300 * time.Millisecond,
		HeartbeatInterval: 200 * time.Millisecond, FlushInterval: 10 * time.Millisecond}
}

// ship starts host A's shipper; the function it returns waits until pos is shipped and stops it.
func (fx *secFixture) ship(t *testing.T) func(pos archive.Position) {
	t.Helper()
	sh, err := forward.New(forward.Config{Addr: fx.st.Addr, StoreKey: fx.st.Key, Identity: fx.idA, Dir: fx.dir, Writer: fx.w,
		MaxBackoff: 200 * time.Millisecond, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sh.Run(ctx); close(done) }()
	return func(pos archive.Position) {
		t.Helper()
		wctx, wcancel := context.WithTimeout(context.Background(), 15*time.Second)
		err := sh.WaitShipped(wctx, pos)
		wcancel()
		cancel()
		<-done
		if err != nil {
			t.Fatalf("host A's archive not shipped: %v", err)
		}
	}
}

// write appends n events to host A's archive over about n ms, and waits a few flushes.
func (fx *secFixture) write(n int) {
	for range n {
		fx.serial++
		fx.w.Append(secEvent(fx.serial))
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
}

// finish lets the honest host continue: its shipper resumes from the store's STATE after whatever was
// refused, and the store's copy is then the host's archive byte for byte, and verifies.
func (fx *secFixture) finish(t *testing.T) {
	t.Helper()
	stop := fx.ship(t)
	fx.write(100)
	if err := fx.w.Close(); err != nil {
		t.Fatal(err)
	}
	stop(fx.w.Durable())
	shiptest.SameFiles(t, fx.dir, fx.st.HostDir(originA))
	vk, _, err := archive.LoadVerifierKey(fx.pubA)
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{fx.dir, fx.st.HostDir(originA)} {
		r, err := verify.Dir(dir, verify.Options{Key: vk})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != verify.Pass {
			t.Fatalf("verify %s: %s %+v", dir, r.Status, r.Problems)
		}
	}
}

func (fx *secFixture) dial(t *testing.T, id *archive.Identity) *secClient {
	t.Helper()
	c, err := secDial(fx.st, id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.c.Close() })
	return c
}

// unchanged fails the test unless A's area is as the honest host left it (evidence/ aside).
func (fx *secFixture) unchanged(t *testing.T) {
	t.Helper()
	now := secAreaFiles(t, fx.st.HostDir(originA))
	for name, b := range fx.snapshot {
		if !bytes.Equal(now[name], b) {
			t.Errorf("%s of host A's area changed: %d bytes, was %d", name, len(now[name]), len(b))
		}
	}
	for name := range now {
		if _, ok := fx.snapshot[name]; !ok {
			t.Errorf("host A's area has a new file %s", name)
		}
	}
}

// next returns the honest host's bytes after the end of the store's copy: the segment, the offset and
// the bytes (up to the end of that segment, at most wire.MaxData).
func (fx *secFixture) next(t *testing.T) (string, int64, []byte) {
	t.Helper()
	name, off := fx.end.Segment, fx.end.Offset
	b, err := os.ReadFile(filepath.Join(fx.dir, name))
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) == off { // the segment ended there: the next one
		segs := secSegments(t, fx.dir)
		for i, s := range segs {
			if s == name && i+1 < len(segs) {
				name, off = segs[i+1], 0
			}
		}
		if off != 0 {
			t.Fatalf("host A wrote nothing after %s", name)
		}
		if b, err = os.ReadFile(filepath.Join(fx.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	b = b[off:]
	return name, off, b[:min(len(b), wire.MaxData)]
}

// secMagic starts every segment file (docs/format.md, "Segments").
const secMagic = "AUDITARCH-SEG-1\n"

// secFirstBlock is where the first block is in bytes of a segment from off: after the magic at 0.
func secFirstBlock(off int64) int {
	if off == 0 {
		return len(secMagic)
	}
	return 0
}

// secBlockEnd returns the end of the block at p in b: u32 length, u32 CRC-32C, the compressed bytes.
func secBlockEnd(t *testing.T, b []byte, p int) int {
	t.Helper()
	if len(b) < p+8 {
		t.Fatalf("no block header at %d of %d bytes", p, len(b))
	}
	end := p + 8 + int(binary.LittleEndian.Uint32(b[p:]))
	if end > len(b) {
		t.Fatalf("block at %d ends at %d, after the %d bytes", p, end, len(b))
	}
	return end
}

// The blocks' zstd dictionary and its ID (docs/format.md, "Segments").
const secDictID = 0x41410001

var secCastagnoli = crc32.MakeTable(crc32.Castagnoli)

// secAlterLeaf returns b (segment bytes whose first block is at p) up to the end of the first block that
// holds an event leaf and, after it, a checkpoint; in that block the event's command is renamed, and the
// block is compressed again with a correct CRC.
func secAlterLeaf(t *testing.T, b []byte, p int) []byte {
	t.Helper()
	dict, err := os.ReadFile(filepath.Join("..", "archive", "zstd.dict"))
	if err != nil {
		t.Fatal(err)
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderDictRaw(secDictID, dict))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderDictRaw(secDictID, dict), zstd.WithEncoderCRC(false))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	for p+8 <= len(b) {
		end := p + 8 + int(binary.LittleEndian.Uint32(b[p:]))
		if end > len(b) {
			break
		}
		plain, err := dec.DecodeAll(b[p+8:end], nil)
		if err != nil {
			t.Fatalf("block at %d: %v", p, err)
		}
		const from, to = `comm="cat"`, `comm="dog"`
		leaf, checkpoint := -1, -1
		for e := 0; e+5 <= len(plain); {
			typ, n := plain[e], int(binary.LittleEndian.Uint32(plain[e+1:]))
			switch {
			case typ == 2 && leaf < 0 && bytes.Contains(plain[e+5:e+5+n], []byte(from)):
				leaf = e
			case typ == 3 && leaf >= 0:
				checkpoint = e
			}
			e += 5 + n
		}
		if leaf >= 0 && checkpoint > leaf {
			i := leaf + 5 + bytes.Index(plain[leaf+5:], []byte(from))
			copy(plain[i:], to)
			z := enc.EncodeAll(plain, nil)
			out := bytes.Clone(b[:p])
			out = binary.LittleEndian.AppendUint32(out, uint32(len(z)))
			out = binary.LittleEndian.AppendUint32(out, crc32.Checksum(z, secCastagnoli))
			return append(out, z...)
		}
		p = end
	}
	t.Fatal("no block of the honest host's next bytes holds an event leaf followed by a checkpoint")
	return nil
}

// secClient speaks the shipping protocol as any client may: a certificate for any key (or none), frames
// of its own making. It checks that the store presents the store key.
type secClient struct {
	c  *tls.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

func secDial(st *shiptest.Store, id *archive.Identity) (*secClient, error) {
	want := st.Key.PublicKey()
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		ServerName:         "auditarch-store",
		InsecureSkipVerify: true, // the store key is pinned below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			k, err := wire.PeerKey(raw)
			if err != nil {
				return err
			}
			if !k.Equal(want) {
				return errors.New("the store does not present the store key")
			}
			return nil
		},
	}
	if id != nil {
		cert, err := wire.Certificate(id.Key, id.Signer.Name())
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", st.Addr, cfg)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &secClient{c: c, br: bufio.NewReader(c), bw: bufio.NewWriter(c)}, nil
}

// hello sends HELLO for origin and returns the store's STATE, or its ERROR as a *wire.RemoteError.
func (c *secClient) hello(origin string) (wire.StateMsg, error) {
	var st wire.StateMsg
	if err := wire.WriteJSON(c.bw, wire.Hello, wire.HelloMsg{Version: wire.Version, Origin: origin}); err != nil {
		return st, err
	}
	if err := c.bw.Flush(); err != nil {
		return st, err
	}
	typ, p, err := wire.ReadFrame(c.br, nil)
	switch {
	case err != nil:
		return st, err
	case typ == wire.Error:
		var m wire.ErrorMsg
		json.Unmarshal(p, &m)
		return st, &wire.RemoteError{ErrorMsg: m}
	case typ != wire.State:
		return st, fmt.Errorf("frame type %d, not STATE", typ)
	}
	return st, json.Unmarshal(p, &st)
}

func (c *secClient) send(t *testing.T, seq uint64, name string, off int64, data []byte) {
	t.Helper()
	if err := wire.WriteFrame(c.bw, wire.Data, wire.AppendData(nil, seq, name, off, data)); err != nil {
		t.Fatal(err)
	}
	if err := c.bw.Flush(); err != nil {
		t.Fatal(err)
	}
}

// refused reads the store's answer to what was sent, which must be ERROR with code; the store then
// closes the connection.
func (c *secClient) refused(t *testing.T, code string) *wire.RemoteError {
	t.Helper()
	typ, p, err := wire.ReadFrame(c.br, nil)
	if err != nil {
		t.Fatalf("want ERROR %s, got %v", code, err)
	}
	if typ != wire.Error {
		t.Fatalf("want ERROR %s, got frame type %d: %s", code, typ, p)
	}
	re := &wire.RemoteError{}
	if err := json.Unmarshal(p, &re.ErrorMsg); err != nil {
		t.Fatal(err)
	}
	if re.Code != code {
		t.Fatalf("want ERROR %s, got %v", code, re)
	}
	t.Logf("store: %v", re)
	if _, _, err := wire.ReadFrame(c.br, nil); err == nil {
		t.Errorf("the store sent a frame after ERROR")
	}
	return re
}

func secRemoteCode(t *testing.T, err error, code string) {
	t.Helper()
	var re *wire.RemoteError
	if !errors.As(err, &re) || re.Code != code {
		t.Fatalf("want ERROR %s, got %v", code, err)
	}
	t.Logf("store: %v", re)
}

// secWaitAlarm waits for an alarm of kind about host and returns the first.
func secWaitAlarm(t *testing.T, st *shiptest.Store, kind, host string) store.Alarm {
	t.Helper()
	return secWaitAlarms(t, st, kind, host, 1)[0]
}

// secWaitAlarms waits until there are at least n alarms of kind about host, and returns them.
func secWaitAlarms(t *testing.T, st *shiptest.Store, kind, host string, n int) []store.Alarm {
	t.Helper()
	var got []store.Alarm
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		got = got[:0]
		for _, a := range st.Server.Alarms() {
			if a.Kind == kind && a.Host == host {
				got = append(got, a)
			}
		}
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d %s alarms about %q, want %d; alarms: %+v", len(got), kind, host, n, st.Server.Alarms())
		}
	}
}

// secAlarmsFileHas fails the test unless alarms.log holds an alarm of kind about host.
func secAlarmsFileHas(t *testing.T, st *shiptest.Store, kind, host string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(st.Dir, store.AlarmsFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		var a store.Alarm
		if json.Unmarshal(line, &a) == nil && a.Kind == kind && a.Host == host {
			return
		}
	}
	t.Errorf("no %s alarm about %q in %s:\n%s", kind, host, store.AlarmsFile, b)
}

// secLogHas fails the test unless a line of the store's log (read once the store is stopped) matches.
func secLogHas(t *testing.T, st *shiptest.Store, what string, match func(map[string]any) bool) {
	t.Helper()
	if !secLogMatches(t, st, match) {
		t.Errorf("the store's log does not have %s:\n%s", what, st.Log.Bytes())
	}
}

func secLogHasNot(t *testing.T, st *shiptest.Store, what string, match func(map[string]any) bool) {
	t.Helper()
	if secLogMatches(t, st, match) {
		t.Errorf("the store's log has %s:\n%s", what, st.Log.Bytes())
	}
}

func secLogMatches(t *testing.T, st *shiptest.Store, match func(map[string]any) bool) bool {
	t.Helper()
	for _, line := range bytes.Split(st.Log.Bytes(), []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(line, &m) == nil && match(m) {
			return true
		}
	}
	return false
}

// secEvidence fails the test unless dir/evidence holds data, refused with code, at name and off.
func secEvidence(t *testing.T, dir, code, name string, off int64, data []byte) {
	t.Helper()
	metas, _ := filepath.Glob(filepath.Join(dir, store.EvidenceDir, "*.json"))
	for _, mp := range metas {
		b, err := os.ReadFile(mp)
		if err != nil {
			t.Fatal(err)
		}
		var m struct {
			Code    string `json:"code"`
			Segment string `json:"segment"`
			Offset  int64  `json:"offset"`
		}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v", mp, err)
		}
		if m.Code != code || m.Segment != name || m.Offset != off {
			continue
		}
		bin, err := os.ReadFile(strings.TrimSuffix(mp, ".json") + ".bin")
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(bin, data) {
			return
		}
	}
	t.Errorf("no %s evidence of %d bytes at %d of %s in %s (%d evidence files)", code, len(data), off, name, dir, len(metas))
}

func secSegments(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "seg-*.aseg"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	return m // Glob sorts
}

func secNoSegments(t *testing.T, dir string) {
	t.Helper()
	if segs := secSegments(t, dir); len(segs) > 0 {
		t.Errorf("%s holds segments %v", dir, segs)
	}
}

// secAreaFiles returns the bytes of every file in a host's area, its evidence/ aside.
func secAreaFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range ents {
		if e.Name() == store.EvidenceDir {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

func secEvent(serial uint32) *audit.RawEvent {
	now := time.Now().UnixNano()
	sec, msec := now/1e9, int32(now%1e9/1e6)
	stamp := fmt.Sprintf("audit(%d.%03d:%d): ", sec, msec, serial)
	return &audit.RawEvent{Kind: audit.KindEvent, Serial: serial, Sec: sec, Msec: msec, Received: now, EOE: true,
		Records: []audit.Record{{Type: 1300, Text: []byte(stamp + fmt.Sprintf(`arch=c000003e syscall=257 success=yes exit=3 pid=%d comm="cat"`, serial))}}}
}

// secBuffer is a log buffer that a test may read while a logger writes to it.
type secBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *secBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *secBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}
