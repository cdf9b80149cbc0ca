package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/internal/archivetest"
	"github.com/auditarch/auditarch/internal/peers"
	"github.com/auditarch/auditarch/internal/shiptest"
	"github.com/auditarch/auditarch/store"
	"github.com/auditarch/auditarch/store/s3lock"
)

// TestStoreVerify: `auditarch store verify` passes a store whose copy verifies, whose receipts are signed
// by its key, whose sealed segments are immutable and under COMPLIANCE retention in the bucket; it fails
// (exit 4) once a byte of the copy changes, and when a sealed segment is not in the bucket.
func TestStoreVerify(t *testing.T) {
	g := peers.S3Gateway(t)
	endpoint, ak, sk := g.Endpoint, g.AccessKey, g.SecretKey
	ctx := context.Background()
	g.LockedBucket(t, "locked")
	g.LockedBucket(t, "empty")
	t.Setenv("AWS_ACCESS_KEY_ID", ak)
	t.Setenv("AWS_SECRET_ACCESS_KEY", sk)
	locked, err := s3lock.Open(ctx, s3lock.Config{Endpoint: endpoint, Bucket: "locked", AccessKey: ak, SecretKey: sk,
		Retention: time.Hour, Prefix: "auditarch/"}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	id, pub := archivetest.Identity(t, "auditarch/web1")
	st := shiptest.StartStore(t, "", store.Config{Upload: locked}, pub)
	shiptest.ShipArchive(t, st, writer.Options{Identity: id, SegmentDuration: 400 * time.Millisecond, FlushInterval: 10 * time.Millisecond}, 100, 10*time.Millisecond)
	st.Stop() // waits for the uploads of the sealed segments

	verify := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := Main(append([]string{"store", "verify"}, args...), &out, &errb)
		return code, out.String() + errb.String()
	}
	code, out := verify("--s3-endpoint", endpoint, "--s3-bucket", "locked", st.Dir)
	if code != 0 || !strings.Contains(out, "auditarch/web1: PASS") {
		t.Fatalf("store verify: exit %d\n%s", code, out)
	}
	t.Logf("%s", out)
	code, out = verify("--s3-endpoint", endpoint, "--s3-bucket", "empty", st.Dir)
	if code != 4 || !strings.Contains(out, "not under object lock") {
		t.Fatalf("store verify against a bucket without the segments: exit %d\n%s", code, out)
	}
	// An administrator with root clears the flag and alters a byte: verify says TAMPERED.
	area := st.HostDir("auditarch/web1")
	store.ClearImmutable(area)
	segs, _ := filepath.Glob(filepath.Join(area, "seg-*.aseg"))
	data, _ := os.ReadFile(segs[1])
	data[len(data)/2] ^= 1
	os.Chmod(segs[1], 0o600)
	if err := os.WriteFile(segs[1], data, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out = verify(st.Dir)
	if code != 4 || !strings.Contains(out, "TAMPERED") || !strings.Contains(out, "sealed segments without the immutable flag") {
		t.Fatalf("store verify of an altered copy: exit %d\n%s", code, out)
	}
}
