package store_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/receipt"
	"github.com/auditarch/auditarch/archive/verify"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/internal/archivetest"
	"github.com/auditarch/auditarch/internal/privtest"
	"github.com/auditarch/auditarch/internal/shiptest"
	"github.com/auditarch/auditarch/store"
)

// fakeLock is a store.RetentionReader: every segment is under COMPLIANCE retention for another hour,
// except those in missing, which are not in the bucket. It records the segments asked about.
type fakeLock struct {
	missing map[string]bool
	asked   []string
}

func (f *fakeLock) Retention(ctx context.Context, host, name string) (string, time.Time, error) {
	f.asked = append(f.asked, host+"/"+name)
	if f.missing[name] {
		return "", time.Time{}, errors.New("no such object")
	}
	return "COMPLIANCE", time.Now().Add(time.Hour), nil
}

// shippedStore returns a store that holds web1's shipped archive (several sealed segments, receipts)
// and an enrolled web2 that never shipped.
func shippedStore(t *testing.T) *shiptest.Store {
	t.Helper()
	id, pub := archivetest.Identity(t, "auditarch/web1")
	_, pub2 := archivetest.Identity(t, "auditarch/web2")
	st := shiptest.StartStore(t, "", store.Config{}, pub, pub2)
	shiptest.ShipArchive(t, st, writer.Options{Identity: id, SegmentDuration: 400 * time.Millisecond, FlushInterval: 10 * time.Millisecond}, 60, 10*time.Millisecond)
	st.Stop()
	return st
}

// TestVerifyDir: a store's verdict host by host — a shipped copy passes with its receipts counted, an
// enrolled host without segments passes, and the object lock is asked about every sealed segment; a
// segment missing from the bucket, a receipt not signed by the store key, or an unreadable store
// directory each make it fail.
func TestVerifyDir(t *testing.T) {
	st := shippedStore(t)
	ctx := context.Background()
	lock := &fakeLock{}
	rep, err := store.VerifyDir(ctx, st.Dir, store.VerifyDirOptions{ObjectLock: lock})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Status() != verify.Pass || len(rep.Hosts) != 2 {
		t.Fatalf("VerifyDir: %s, %d hosts, want PASS and 2", rep.Status(), len(rep.Hosts))
	}
	web1, web2 := rep.Hosts[0], rep.Hosts[1]
	if web1.Host != "auditarch/web1" || web1.Status() != verify.Pass || web1.Receipts == 0 || web1.BadReceipts != 0 || web1.Evidence != 0 || web1.NotLocked != nil {
		t.Errorf("web1: %+v, report %+v", web1, web1.Report)
	}
	var sealed []string
	for _, s := range web1.Report.Segments {
		if s.Sealed {
			sealed = append(sealed, "auditarch%2Fweb1/"+s.File)
		}
	}
	if len(sealed) < 2 || !slices.Equal(lock.asked, sealed) {
		t.Errorf("object lock asked about %v, want the sealed segments %v", lock.asked, sealed)
	}
	if web2.Host != "auditarch/web2" || web2.Status() != verify.Pass || web2.Report.Segments != nil || web2.Immutable != "" {
		t.Errorf("web2 (no segments): %+v", web2)
	}

	// A sealed segment that is not in the bucket.
	missing := filepath.Base(strings.TrimPrefix(sealed[0], "auditarch%2Fweb1/"))
	rep, err = store.VerifyDir(ctx, st.Dir, store.VerifyDirOptions{ObjectLock: &fakeLock{missing: map[string]bool{missing: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Hosts[0].NotLocked; len(got) != 1 || !strings.HasPrefix(got[0], missing+" ( until ") || !strings.HasSuffix(got[0], ", no such object)") {
		t.Errorf("not locked: %q, want %s", got, missing)
	}
	if rep.Status() != verify.Tampered || rep.Hosts[0].Report.Status != verify.Pass {
		t.Errorf("a segment missing from the bucket: %s (copy %s), want TAMPERED (copy PASS)", rep.Status(), rep.Hosts[0].Report.Status)
	}

	// Refused bytes kept as evidence are counted; they change no verdict.
	evdir := filepath.Join(st.HostDir("auditarch/web1"), store.EvidenceDir)
	if err := os.MkdirAll(evdir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(evdir, "x.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A receipt cosigned by another key.
	other := filepath.Join(t.TempDir(), "other")
	if _, err := receipt.CosignerKeygen(other, "auditarch-store/other"); err != nil {
		t.Fatal(err)
	}
	c, err := receipt.LoadCosigner(filepath.Join(other, receipt.StoreKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := c.Cosign([]byte(web1.Report.Latest), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(st.HostDir("auditarch/web1"), store.ReceiptsFile), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := receipt.Append(f, rc); err != nil {
		t.Fatal(err)
	}
	f.Close()
	rep, err = store.VerifyDir(ctx, st.Dir, store.VerifyDirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := rep.Hosts[0]; h.BadReceipts != 1 || h.Receipts != web1.Receipts || h.Evidence != 1 || h.Status() != verify.Tampered || rep.Status() != verify.Tampered {
		t.Errorf("a receipt not signed by the store key: %d bad, %d good (want 1, %d), evidence %d, %s", h.BadReceipts, h.Receipts, web1.Receipts, h.Evidence, rep.Status())
	}

	// What cannot be read is an error, not a verdict.
	if err := os.Remove(filepath.Join(st.Dir, store.PubFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := store.VerifyDir(ctx, st.Dir, store.VerifyDirOptions{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("without store.pub: %v, want a missing file", err)
	}
	if _, err := store.VerifyDir(ctx, t.TempDir(), store.VerifyDirOptions{}); err == nil {
		t.Errorf("an empty directory verified")
	}
}

// TestVerifyDirImmutable: the store makes sealed segments immutable (root needed); a copy altered after
// the flag was cleared is TAMPERED, with the segments that lost it listed.
func TestVerifyDirImmutable(t *testing.T) {
	privtest.Root(t)
	st := shippedStore(t)
	ctx := context.Background()
	rep, err := store.VerifyDir(ctx, st.Dir, store.VerifyDirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := rep.Hosts[0]; h.Immutable != store.ImmutableYes || h.MutableSealed != nil {
		t.Fatalf("immutable %q, mutable %v; want every sealed segment immutable", h.Immutable, h.MutableSealed)
	}
	area := st.HostDir("auditarch/web1")
	if err := store.ClearImmutable(area); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(area, archive.SegmentPattern))
	data, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 1
	if err := os.WriteFile(segs[0], data, 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err = store.VerifyDir(ctx, st.Dir, store.VerifyDirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h := rep.Hosts[0]
	if h.Immutable != store.ImmutablePartial || len(h.MutableSealed) == 0 {
		t.Errorf("immutable %q, mutable %v; want partial, with the sealed segments listed", h.Immutable, h.MutableSealed)
	}
	if h.Report.Status != verify.Tampered || rep.Status() != verify.Tampered {
		t.Errorf("an altered copy: %s (store %s), want TAMPERED", h.Report.Status, rep.Status())
	}
}
