package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/receipt"
	"github.com/auditarch/auditarch/archive/verify"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/internal/archivetest"
)

// vtArchive writes one run of a writer with fast options (segments of 0.7 s, epochs of 0.3 s) over about
// d into a new directory, and returns it.
func vtArchive(t *testing.T, id *archive.Identity, n int, d time.Duration) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "arch")
	vtRun(t, dir, writer.Options{Identity: id, SegmentDuration: 700 * time.Millisecond, EpochDuration: 300 * time.Millisecond,
		HeartbeatInterval: 200 * time.Millisecond, FlushInterval: 20 * time.Millisecond}, n, d)
	return dir
}

// vtRun appends n events to dir in one run over about d.
func vtRun(t *testing.T, dir string, opts writer.Options, n int, d time.Duration) {
	t.Helper()
	w, err := writer.Create(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		now := time.Now()
		stamp := fmt.Sprintf("audit(%d.%03d:%d): ", now.Unix(), now.Nanosecond()/1e6, i+1)
		w.Append(&audit.RawEvent{Kind: audit.KindEvent, Serial: uint32(i + 1), Sec: now.Unix(), Msec: int32(now.Nanosecond() / 1e6),
			Received: now.UnixNano(), EOE: true, Records: []audit.Record{{Type: 1300, Text: []byte(stamp + "arch=c000003e syscall=59 success=yes")}}})
		if d > 0 {
			time.Sleep(d / time.Duration(n))
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func vtSegments(t *testing.T, dir string) []string {
	t.Helper()
	f, err := filepath.Glob(filepath.Join(dir, "seg-*.aseg"))
	if err != nil || len(f) == 0 {
		t.Fatalf("segments of %s: %v (%d)", dir, err, len(f))
	}
	return f // Glob sorts
}

// vtMain runs auditarch with args and returns its exit status, stdout and stderr.
func vtMain(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Main(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// TestVerifyTamper runs `auditarch verify` over archives altered with plain file operations, as a user
// with root could: each must give the documented exit status and name the problem.
func TestVerifyTamper(t *testing.T) {
	id, pub := archivetest.Identity(t, "auditarch/host-a")
	base := vtArchive(t, id, 120, 2200*time.Millisecond)
	if n := len(vtSegments(t, base)); n < 3 {
		t.Fatalf("%d segments, the cases need 3", n)
	}
	otherID, _ := archivetest.Identity(t, "auditarch/host-b")
	other := vtArchive(t, otherID, 40, 1000*time.Millisecond)

	cases := []struct {
		name   string
		tamper func(t *testing.T, dir string)
		code   int
		want   string // in stdout: the problem code
		stderr string
	}{
		{"untouched", func(t *testing.T, dir string) {}, 0, "PASS: ", ""},
		{"truncate-tail", func(t *testing.T, dir string) {
			f := vtSegments(t, dir)
			last := f[len(f)-1]
			st, err := os.Stat(last)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(last, st.Size()-5); err != nil {
				t.Fatal(err)
			}
		}, exitIncomplete, "incomplete [torn-tail]", "verify: evidence is incomplete"},
		{"delete-middle-segment", func(t *testing.T, dir string) {
			if err := os.Remove(vtSegments(t, dir)[1]); err != nil {
				t.Fatal(err)
			}
		}, exitIncomplete, "incomplete [missing-segment]", "verify: evidence is incomplete"},
		{"delete-newest-segment", func(t *testing.T, dir string) {
			f := vtSegments(t, dir)
			if err := os.Remove(f[len(f)-1]); err != nil {
				t.Fatal(err)
			}
		}, exitIncomplete, "incomplete [missing-segment]", "verify: evidence is incomplete"},
		{"flip-byte", func(t *testing.T, dir string) {
			f := vtSegments(t, dir)[1]
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			// Skip the magic and the header block: flip a byte inside the second block's frame.
			off := 16 + 8 + int(binary.LittleEndian.Uint32(data[16:]))
			n := int(binary.LittleEndian.Uint32(data[off:]))
			data[off+8+n/2] ^= 0x20
			if err := os.WriteFile(f, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}, exitTampered, "tampered [damaged]", "verify: the archive was tampered with"},
		{"splice-foreign-segment", func(t *testing.T, dir string) {
			f := vtSegments(t, other)[1]
			archivetest.CopyFile(t, f, filepath.Join(dir, strings.Replace(filepath.Base(f), ".aseg", "Z.aseg", 1)))
		}, exitTampered, "tampered [origin]", "verify: the archive was tampered with"},
		{"replay-old-segment", func(t *testing.T, dir string) {
			f := vtSegments(t, dir)
			archivetest.CopyFile(t, f[1], filepath.Join(dir, "seg-99999999999999999999-99991231T235959Z.aseg"))
		}, exitTampered, "tampered [replay]", "verify: the archive was tampered with"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := archivetest.CopyDir(t, base)
			c.tamper(t, dir)
			code, stdout, stderr := vtMain(t, "verify", "--key", pub, dir)
			t.Logf("exit %d\n%s%s", code, stdout, stderr)
			if code != c.code {
				t.Errorf("exit status %d, want %d", code, c.code)
			}
			if !strings.Contains(stdout, c.want) {
				t.Errorf("stdout does not say %q", c.want)
			}
			if c.stderr != "" && !strings.Contains(stderr, c.stderr) {
				t.Errorf("stderr does not say %q", c.stderr)
			}
			// The same verdict in --json.
			_, js, _ := vtMain(t, "verify", "--json", "--key", pub, dir)
			var r verify.Report
			if err := json.Unmarshal([]byte(js), &r); err != nil {
				t.Fatalf("--json: %v", err)
			}
			wantStatus := map[int]string{0: verify.Pass, exitIncomplete: verify.Incomplete, exitTampered: verify.Tampered}[c.code]
			if r.Status != wantStatus {
				t.Errorf("--json status %s, want %s", r.Status, wantStatus)
			}
			if i, j := strings.Index(c.want, "["), strings.Index(c.want, "]"); i >= 0 && !hasCode(r, c.want[i+1:j]) {
				t.Errorf("--json problems %+v lack %q", r.Problems, c.want[i+1:j])
			}
		})
	}
}

func hasCode(r verify.Report, code string) bool {
	for _, p := range r.Problems {
		if p.Code == code {
			return true
		}
	}
	return false
}

// TestVerifyWitnessRollback: verify --witness remembers the newest checkpoint of an archive that passed; an
// older copy put back in its place is then a rollback (exit 4), and the witness file does not move back.
func TestVerifyWitnessRollback(t *testing.T) {
	id, pub := archivetest.Identity(t, "auditarch/host-a")
	dir := filepath.Join(t.TempDir(), "arch")
	vtRun(t, dir, writer.Options{Identity: id}, 10, 0)
	old := archivetest.CopyDir(t, dir)
	vtRun(t, dir, writer.Options{Identity: id}, 10, 0)
	witness := filepath.Join(t.TempDir(), "witness")

	code, stdout, stderr := vtMain(t, "verify", "--key", pub, "--witness", witness, dir)
	if code != 0 {
		t.Fatalf("verify the current archive: exit %d\n%s%s", code, stdout, stderr)
	}
	seen, err := os.ReadFile(witness)
	// Two runs of START, 10 events, STOP and SEAL: the witness is the final checkpoint of 26 leaves.
	if err != nil || !bytes.HasPrefix(seen, []byte("auditarch/host-a\n26\n")) {
		t.Fatalf("witness file %q: %v", seen, err)
	}

	code, stdout, stderr = vtMain(t, "verify", "--key", pub, "--witness", witness, old)
	t.Logf("exit %d\n%s%s", code, stdout, stderr)
	if code != exitTampered || !strings.Contains(stdout, "tampered [rollback]") || !strings.Contains(stderr, "tampered with") {
		t.Errorf("rolled-back archive: exit %d, want %d with a rollback problem", code, exitTampered)
	}
	if now, _ := os.ReadFile(witness); !bytes.Equal(now, seen) {
		t.Errorf("the witness moved back to %q", now)
	}
}

// TestVerifyReceiptNewestSegmentRemoved: the store acknowledged the whole archive (DIR/receipts); the newest
// segment deleted afterwards is a truncation (exit 4, code truncated), which the report names with the
// receipt it was checked against.
func TestVerifyReceiptNewestSegmentRemoved(t *testing.T) {
	id, pub := archivetest.Identity(t, "auditarch/host-a")
	dir := filepath.Join(t.TempDir(), "arch")
	vtRun(t, dir, writer.Options{Identity: id}, 10, 0)
	vtRun(t, dir, writer.Options{Identity: id}, 10, 0)
	storeDir := filepath.Join(t.TempDir(), "store")
	if _, err := receipt.CosignerKeygen(storeDir, "auditarch-store/test"); err != nil {
		t.Fatal(err)
	}
	c, err := receipt.LoadCosigner(filepath.Join(storeDir, receipt.StoreKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	r, err := verify.Dir(dir, verify.Options{})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2025, 6, 1, 8, 0, 0, 0, time.UTC)
	rc, err := c.Cosign([]byte(r.Latest), at)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, receipt.ReceiptsFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := receipt.Append(f, rc); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	storePub := filepath.Join(storeDir, receipt.StorePubFile)

	receipts := filepath.Join(dir, receipt.ReceiptsFile)
	code, stdout, stderr := vtMain(t, "verify", "--key", pub, "--store-key", storePub, "--receipts", receipts, dir)
	if code != 0 || !strings.Contains(stdout, "  store receipt: 26 leaves at 2025-06-01T08:00:00Z: consistent\n") {
		t.Fatalf("verify with the receipt: exit %d\n%s%s", code, stdout, stderr)
	}

	segs := vtSegments(t, dir)
	if len(segs) != 2 {
		t.Fatalf("%d segments, want 2", len(segs))
	}
	if err := os.Remove(segs[1]); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = vtMain(t, "verify", "--key", pub, "--store-key", storePub, "--receipts", receipts, "--json", dir)
	var rep verify.Report
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("verify --json: %v\n%s%s", err, stdout, stderr)
	}
	want := verify.ReceiptReport{Size: 26, Time: "2025-06-01T08:00:00Z", Status: "truncated"}
	if code != exitTampered || rep.Status != verify.Tampered || len(rep.Problems) != 1 || !hasCode(rep, "truncated") ||
		rep.Receipt == nil || *rep.Receipt != want {
		t.Errorf("newest segment removed: exit %d, status %s, problems %+v, receipt %+v; want exit %d, only truncated, receipt %+v",
			code, rep.Status, rep.Problems, rep.Receipt, exitTampered, want)
	}
}
