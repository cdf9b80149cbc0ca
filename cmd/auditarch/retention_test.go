package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/receipt"
	"github.com/auditarch/auditarch/archive/retain"
	"github.com/auditarch/auditarch/archive/verify"
	"github.com/auditarch/auditarch/internal/archivetest"
)

// TestVerifyPruned: `auditarch verify` over an archive whose oldest segments retention removed passes with
// the store's key and says which leaves the store's receipt attests; without the store key it is
// INCOMPLETE (exit 3), as if the segments were deleted.
func TestVerifyPruned(t *testing.T) {
	const origin = "auditarch/host-pruned"
	id, pub := archivetest.Identity(t, origin)
	dir := vtArchive(t, id, 200, 2*time.Second)
	storeDir := filepath.Join(t.TempDir(), "store")
	if _, err := receipt.CosignerKeygen(storeDir, "auditarch-store/test"); err != nil {
		t.Fatal(err)
	}
	c, err := receipt.LoadCosigner(filepath.Join(storeDir, receipt.StoreKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	storePub := filepath.Join(storeDir, receipt.StorePubFile)
	r, err := verify.Dir(dir, verify.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := c.Cosign([]byte(r.Latest), time.Date(2025, 6, 1, 8, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	receipts := filepath.Join(dir, receipt.ReceiptsFile)
	f, err := os.OpenFile(receipts, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := receipt.Append(f, rc); err != nil {
		t.Fatal(err)
	}
	f.Close()
	sk, err := receipt.LoadCosignVerifier(storePub)
	if err != nil {
		t.Fatal(err)
	}
	p, err := retain.New(retain.Options{Dir: dir, StoreKey: sk, Origin: origin, Identity: id.VKey, Keep: time.Nanosecond, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.Prune(0)
	p.Close()
	if err != nil || res.Segments == 0 {
		t.Fatalf("prune: %+v, %v", res, err)
	}
	code, stdout, stderr := vtMain(t, "verify", "--key", pub, "--store-key", storePub, "--receipts", receipts, dir)
	want := regexp.MustCompile(`(?m)^  pruned: leaves 0\.\.(\d+) attested by store receipt of \d+ leaves at 2025-06-01T08:00:00Z \(\d+ segment files removed by retention\)$`)
	if m := want.FindStringSubmatch(stdout); code != 0 || m == nil || m[1] != strconv.FormatUint(res.Kept-1, 10) {
		t.Fatalf("verify the pruned archive: exit %d, pruned up to %d\n%s%s", code, res.Kept, stdout, stderr)
	}
	code, stdout, stderr = vtMain(t, "verify", "--key", pub, dir)
	if code != exitIncomplete || !strings.Contains(stdout, "[missing-start]") || !strings.Contains(stdout, "NOT attested (no-store-key)") {
		t.Fatalf("verify without the store key: exit %d\n%s%s", code, stdout, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, archive.PruneFile)); err != nil {
		t.Fatal(err)
	}
}
