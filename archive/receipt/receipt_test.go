package receipt_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/receipt"
	"github.com/auditarch/auditarch/archive/verify"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/internal/archivetest"
	"github.com/auditarch/auditarch/internal/keyfile"
	"golang.org/x/mod/sumdb/note"
)

// The test vector signs the example checkpoint of c2sp.org/tlog-cosignature at the example's time, with
// an Ed25519 key from a fixed seed (bytes 0..31). Everything the spec defines is computed here from the
// spec's own words; vectorVKey and vectorLine pin the result.
const (
	vectorName       = "witness.example.com/w1"
	vectorTime       = 1679315147
	vectorCheckpoint = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n" +
		"— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
	// The spec's signed message for that checkpoint and time, verbatim.
	vectorMessage = "cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
	// The spec's example cosignature line (another key): its timestamp is the example's time.
	vectorSpecLine = "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"

	vectorVKey = "witness.example.com/w1+a0059f11+BAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4"
	vectorLine = "— witness.example.com/w1 oAWfEQAAAABkGFDLBuRDazBLVac2NE+Y+IjbjQOcXLfF9CSDZVUIoS83rE1nFZsVE8YiWV6Ngr7lV8H6bdoBQGP/l73euDMQ9k+bBQ==\n"
)

func TestCosignVector(t *testing.T) {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	// Key ID: SHA-256(<name> || "\n" || 0x04 || public key)[:4].
	sum := sha256.Sum256(slices.Concat([]byte(vectorName), []byte{'\n', 0x04}, pub))
	keyID := sum[:4]
	skey := "PRIVATE+KEY+" + vectorName + "+" + hex.EncodeToString(keyID) + "+" + base64.StdEncoding.EncodeToString(append([]byte{0x04}, seed...))
	vkey := vectorName + "+" + hex.EncodeToString(keyID) + "+" + base64.StdEncoding.EncodeToString(append([]byte{0x04}, pub...))
	// Signature line: "— <name> base64(key ID || u64 timestamp, big endian || Ed25519 signature)".
	ts := binary.BigEndian.AppendUint64(nil, vectorTime)
	line := "— " + vectorName + " " + base64.StdEncoding.EncodeToString(slices.Concat(keyID, ts, ed25519.Sign(priv, []byte(vectorMessage)))) + "\n"

	// The layout as the spec's own example line has it: key ID, then the timestamp.
	spec, err := base64.StdEncoding.DecodeString(strings.Fields(vectorSpecLine)[2])
	if err != nil || len(spec) != 4+8+64 || !bytes.Equal(spec[4:12], ts) {
		t.Fatalf("the spec's example line does not carry time %d at bytes 4..12: %x (%v)", vectorTime, spec, err)
	}

	if vkey != vectorVKey || line != vectorLine {
		t.Errorf("computed from the spec:\nvkey %s\nline %q\nwant (pinned):\nvkey %s\nline %q", vkey, line, vectorVKey, vectorLine)
	}
	c, err := receipt.NewCosigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	if c.VerifierKey() != vkey {
		t.Errorf("VerifierKey %s, want %s", c.VerifierKey(), vkey)
	}
	got, err := c.Cosign([]byte(vectorCheckpoint), time.Unix(vectorTime, 999e6))
	if err != nil {
		t.Fatal(err)
	}
	if want := vectorCheckpoint + line; string(got) != want {
		t.Errorf("Cosign:\n%s\nwant:\n%s", got, want)
	}
	v, err := receipt.NewCosignVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	ck, when, err := receipt.Open(got, v)
	if err != nil {
		t.Fatal(err)
	}
	if ck.Origin != "example.com/behind-the-sofa" || ck.Size != 20852163 || !when.Equal(time.Unix(vectorTime, 0)) || when.Location() != time.UTC {
		t.Errorf("Open: %+v at %v", ck, when)
	}
}

// tHostCheckpoint returns a checkpoint of size leaves signed by a new host key, and that key's verifier.
func tHostCheckpoint(t testing.TB, size uint64) ([]byte, note.Verifier) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, "host-a.example")
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	hv, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := archive.SignCheckpoint(archive.Checkpoint{Origin: "host-a.example", Size: size, Root: tHash(size)}, s)
	if err != nil {
		t.Fatal(err)
	}
	return msg, hv
}

func tHash(n uint64) (h [32]byte) { return sha256.Sum256(binary.BigEndian.AppendUint64(nil, n)) }

func TestCosignRoundTrip(t *testing.T) {
	c, v := archivetest.Store(t, "store.example/a")
	ck, host := tHostCheckpoint(t, 42)
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	rc, err := c.Cosign(ck, at)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(rc, ck) || bytes.Count(rc[len(ck):], []byte("\n")) != 1 {
		t.Fatalf("the receipt is not the checkpoint plus one line:\n%s", rc)
	}
	got, when, err := receipt.Open(rc, v)
	if err != nil {
		t.Fatal(err)
	}
	if got != (archive.Checkpoint{Origin: "host-a.example", Size: 42, Root: tHash(42)}) || !when.Equal(at) {
		t.Errorf("Open: %+v at %v", got, when)
	}
	// The host's signature still opens, alone and with the store's.
	if _, err := archive.OpenCheckpoint(rc, host); err != nil {
		t.Errorf("host signature: %v", err)
	}
	n, err := note.Open(rc, note.VerifierList(host, v))
	if err != nil || len(n.Sigs) != 2 {
		t.Errorf("note.Open with both keys: %v %+v", err, n)
	}
	// Cosigning a receipt again would give it two times.
	if _, err := c.Cosign(rc, at); err == nil {
		t.Error("Cosign of a receipt it already cosigned succeeded")
	}
	// Another store may cosign the same checkpoint: each verifier finds its own line.
	c2, v2 := archivetest.Store(t, "store.example/b")
	both, err := c2.Cosign(rc, at.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, when, err := receipt.Open(both, v); err != nil || !when.Equal(at) {
		t.Errorf("first store's cosignature in a doubly cosigned receipt: %v %v", when, err)
	}
	if _, when, err := receipt.Open(both, v2); err != nil || !when.Equal(at.Add(time.Hour)) {
		t.Errorf("second store's cosignature: %v %v", when, err)
	}
}

func TestCosignRejects(t *testing.T) {
	c, v := archivetest.Store(t, "store.example/a")
	_, other := archivetest.Store(t, "store.example/a") // same name, another key
	ck, _ := tHostCheckpoint(t, 7)
	at := time.Unix(1_700_000_000, 0)
	rc, err := c.Cosign(ck, at)
	if err != nil {
		t.Fatal(err)
	}
	line := string(rc[len(ck):])
	sig, err := base64.StdEncoding.DecodeString(strings.Fields(line)[2])
	if err != nil {
		t.Fatal(err)
	}
	withSig := func(sig []byte) []byte {
		return []byte(string(ck) + "— store.example/a " + base64.StdEncoding.EncodeToString(sig) + "\n")
	}
	later := bytes.Clone(sig)
	binary.BigEndian.PutUint64(later[4:], 1_700_000_001)
	huge := bytes.Clone(sig)
	binary.BigEndian.PutUint64(huge[4:], 1<<63)
	flipped := bytes.Clone(sig)
	flipped[len(flipped)-1] ^= 1

	for name, r := range map[string][]byte{
		"host checkpoint only": ck,
		"body changed":         bytes.Replace(rc, []byte("\n7\n"), []byte("\n8\n"), 1),
		"timestamp changed":    withSig(later),
		"timestamp over 2^63":  withSig(huge),
		"signature changed":    withSig(flipped),
		"short signature":      withSig(sig[:40]),
		"two cosignatures":     append(bytes.Clone(rc), line...),
	} {
		if _, _, err := receipt.Open(r, v); !errors.Is(err, receipt.ErrReceipt) {
			t.Errorf("%s: Open: %v, want ErrReceipt", name, err)
		}
	}
	if _, _, err := receipt.Open(rc, other); !errors.Is(err, receipt.ErrReceipt) {
		t.Errorf("another key of the same name: %v, want ErrReceipt", err)
	}
	if _, _, err := receipt.Open([]byte("not a note"), v); err == nil || errors.Is(err, receipt.ErrReceipt) {
		t.Errorf("malformed receipt: %v, want a malformed-receipt error", err)
	}

	for name, msg := range map[string]string{
		"no signature":     "host-a.example\n7\n" + base64.StdEncoding.EncodeToString(make([]byte, 32)) + "\n",
		"not a checkpoint": "hello\n\n" + strings.SplitAfter(string(ck), "\n\n")[1],
	} {
		if _, err := c.Cosign([]byte(msg), at); err == nil {
			t.Errorf("Cosign %s: no error", name)
		}
	}
	if _, err := c.Cosign(ck, time.Unix(-1, 0)); err == nil {
		t.Error("Cosign at a time before 1970: no error")
	}

	for _, name := range []string{"", "a b", "a+b", "a\nb"} {
		if _, _, err := receipt.GenerateCosignerKey(name); err == nil {
			t.Errorf("GenerateCosignerKey(%q): no error", name)
		}
	}
	skey, vkey, err := receipt.GenerateCosignerKey("store.example/c")
	if err != nil {
		t.Fatal(err)
	}
	noteSkey, noteVkey, err := note.GenerateKey(rand.Reader, "store.example/c")
	if err != nil {
		t.Fatal(err)
	}
	badID := func(k string) string {
		p := strings.Split(k, "+")
		p[len(p)-2] = "00000000"
		return strings.Join(p, "+")
	}
	for _, k := range []string{noteSkey, badID(skey), vkey, strings.ToUpper(skey[:11]) + skey[11:] + "=", "PRIVATE+KEY+x"} {
		if _, err := receipt.NewCosigner(k); err == nil {
			t.Errorf("NewCosigner(%q): no error", k)
		}
	}
	for _, k := range []string{noteVkey, badID(vkey), skey, vkey + "A", "x+0000000+BA=="} {
		if _, err := receipt.NewCosignVerifier(k); err == nil {
			t.Errorf("NewCosignVerifier(%q): no error", k)
		}
	}
}

func TestReceiptsFile(t *testing.T) {
	c, v := archivetest.Store(t, "store.example/a")
	c2, _ := archivetest.Store(t, "store.example/b")
	path := filepath.Join(t.TempDir(), receipt.ReceiptsFile)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Unix(1_700_000_000, 0)
	var sizes []uint64
	for i, size := range []uint64{5, 9, 9, 7} {
		ck, _ := tHostCheckpoint(t, size)
		r, err := c.Cosign(ck, base.Add(time.Duration(i)*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if err := receipt.Append(f, r); err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, size)
	}
	ck, _ := tHostCheckpoint(t, 100)
	foreign, err := c2.Cosign(ck, base)
	if err != nil {
		t.Fatal(err)
	}
	if err := receipt.Append(f, foreign); err != nil {
		t.Fatal(err)
	}
	for _, r := range [][]byte{nil, []byte("no newline"), make([]byte, receipt.MaxReceiptSize+1)} {
		if err := receipt.Append(f, r); err == nil {
			t.Errorf("Append of %d bytes: no error", len(r))
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	rs, bad, err := receipt.Read(path, v)
	if err != nil || bad != 1 || len(rs) != 4 {
		t.Fatalf("Read: %d receipts, %d bad, %v; want 4, 1, nil", len(rs), bad, err)
	}
	for i, r := range rs {
		if r.Checkpoint.Size != sizes[i] || !r.Time.Equal(base.Add(time.Duration(i)*time.Minute)) {
			t.Errorf("receipt %d: %d leaves at %v", i, r.Checkpoint.Size, r.Time)
		}
	}
	newest, ok := receipt.Newest(rs)
	if !ok || newest.Checkpoint.Size != 9 || !newest.Time.Equal(base.Add(2*time.Minute)) {
		t.Errorf("Newest: %+v", newest)
	}
	if _, ok := receipt.Newest(nil); ok {
		t.Error("Newest(nil) found one")
	}

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data, []byte("receipt ")) {
		t.Fatalf("receipts file starts with %q", data[:20])
	}
	// A file cut inside its last record: the records before it, and a torn CorruptError.
	lastStart := int64(bytes.LastIndex(data, []byte("receipt ")))
	for _, cut := range []int64{1, int64(len(foreign)), int64(len(foreign)) + 2} {
		p := filepath.Join(t.TempDir(), "torn")
		if err := os.WriteFile(p, data[:int64(len(data))-cut], 0o600); err != nil {
			t.Fatal(err)
		}
		rs, bad, err := receipt.Read(p, v)
		var ce *archive.CorruptError
		if !errors.As(err, &ce) || !ce.Torn || ce.Offset != lastStart || len(rs) != 4 || bad != 0 {
			t.Errorf("cut %d bytes: %d receipts, %d bad, %v; want 4, 0 and a torn CorruptError at %d", cut, len(rs), bad, err, lastStart)
		}
	}
	// A damaged header: an error, not torn.
	for _, bad := range []string{"receipt 0\n", "receipt 012\n", "receipt -1\n", "reciept 10\n", "\n", "receipt 99999999\n", "garbage without a newline "} {
		p := filepath.Join(t.TempDir(), "bad")
		if err := os.WriteFile(p, append(bytes.Clone(data), bad+strings.Repeat("x", 20)...), 0o600); err != nil {
			t.Fatal(err)
		}
		var ce *archive.CorruptError
		if _, _, err := receipt.Read(p, v); !errors.As(err, &ce) || ce.Torn || ce.Offset != int64(len(data)) {
			t.Errorf("header %q: %v, want a CorruptError at offset %d", bad, err, len(data))
		}
	}
	// Cut inside a record's header line: torn.
	for _, partial := range []string{"r", "receipt", "receipt ", "receipt 30"} {
		p := filepath.Join(t.TempDir(), "torn-header")
		if err := os.WriteFile(p, append(bytes.Clone(data), partial...), 0o600); err != nil {
			t.Fatal(err)
		}
		rs, bad, err := receipt.Read(p, v)
		var ce *archive.CorruptError
		if !errors.As(err, &ce) || !ce.Torn || ce.Offset != int64(len(data)) || len(rs) != 4 || bad != 1 {
			t.Errorf("ends with %q: %d receipts, %d bad, %v; want 4, 1 and a torn CorruptError at %d", partial, len(rs), bad, err, len(data))
		}
	}
	// An empty file holds no receipts.
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if rs, bad, err := receipt.Read(empty, v); err != nil || bad != 0 || len(rs) != 0 {
		t.Errorf("empty file: %d, %d, %v", len(rs), bad, err)
	}
}

func TestCosignerKeyFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	vkey, err := receipt.CosignerKeygen(dir, "store.example/a")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]os.FileMode{receipt.StoreKeyFile: 0o600, receipt.StorePubFile: 0o644, ".": 0o700} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want mode %04o", name, st.Mode(), err, want)
		}
	}
	c, err := receipt.LoadCosigner(filepath.Join(dir, receipt.StoreKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	v, err := receipt.LoadCosignVerifier(filepath.Join(dir, receipt.StorePubFile))
	if err != nil {
		t.Fatal(err)
	}
	if c.VerifierKey() != vkey || v.String() != vkey {
		t.Errorf("keys: %s, %s, want %s", c.VerifierKey(), v, vkey)
	}
	if _, err := receipt.CosignerKeygen(dir, "store.example/a"); !errors.Is(err, os.ErrExist) {
		t.Errorf("second keygen: %v, want ErrExist", err)
	}
	if err := os.Chmod(filepath.Join(dir, receipt.StoreKeyFile), 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := receipt.LoadCosigner(filepath.Join(dir, receipt.StoreKeyFile)); !errors.Is(err, keyfile.ErrPermissions) {
		t.Errorf("store.key 0640: %v, want keyfile.ErrPermissions", err)
	}
	if err := os.Chmod(filepath.Join(dir, receipt.StoreKeyFile), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := receipt.LoadCosigner(filepath.Join(dir, receipt.StoreKeyFile)); !errors.Is(err, keyfile.ErrPermissions) {
		t.Errorf("directory 0755: %v, want keyfile.ErrPermissions", err)
	}
	if _, err := receipt.LoadCosignVerifier(filepath.Join(dir, "missing.pub")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing store.pub: %v", err)
	}
}

// TestVerifyReceipt: the archive must still hold what the store acknowledged in its newest receipt.
func TestVerifyReceipt(t *testing.T) {
	id, pub := archivetest.Keys(t, "host-a.example")
	store, sv := archivetest.Store(t, "store.example/a")
	at := time.Unix(1_700_000_000, 0).UTC()
	// receiptOf cosigns the newest checkpoint of the archive in dir.
	receiptOf := func(t *testing.T, dir string) receipt.Receipt {
		t.Helper()
		r, err := verify.Dir(dir, verify.Options{})
		if err != nil || r.Latest == "" {
			t.Fatalf("verify %s: %v, latest %q", dir, err, r.Latest)
		}
		return archivetest.Receipt(t, store, sv, []byte(r.Latest), at)
	}
	// Three runs, one segment each.
	dir := filepath.Join(t.TempDir(), "arch")
	archivetest.Write(t, dir, writer.Options{Identity: id}, 5, 0)
	one := archivetest.CopyDir(t, dir)
	archivetest.Write(t, dir, writer.Options{Identity: id}, 5, 0)
	two := archivetest.CopyDir(t, dir)
	archivetest.Write(t, dir, writer.Options{Identity: id}, 5, 0)
	otherID, _ := archivetest.Keys(t, "host-b.example")
	otherDir := filepath.Join(t.TempDir(), "other")
	archivetest.Write(t, otherDir, writer.Options{Identity: otherID}, 3, 0)
	twin := filepath.Join(t.TempDir(), "twin")
	archivetest.Write(t, twin, writer.Options{Identity: id}, 2, 0) // another history under the same identity, shorter

	rTwo := receiptOf(t, two)
	rAll := receiptOf(t, dir)
	older := receipt.Receipt{Checkpoint: receiptOf(t, one).Checkpoint, Time: at.Add(time.Hour)} // newer time, smaller tree
	cases := []struct {
		name     string
		dir      func(t *testing.T) string
		receipts []receipt.Receipt
		status   string
		codes    []string // exactly these problem codes
		receipt  string   // Report.Receipt.Status
	}{
		{"consistent", func(*testing.T) string { return dir }, []receipt.Receipt{older, rTwo}, verify.Pass, nil, verify.ReceiptConsistent},
		{"at the archive's end", func(*testing.T) string { return two }, []receipt.Receipt{rTwo}, verify.Pass, nil, verify.ReceiptConsistent},
		{"newest segment removed", func(t *testing.T) string {
			d := archivetest.CopyDir(t, dir)
			files := archivetest.SegFiles(t, d)
			if len(files) != 3 {
				t.Fatalf("%d segments, want 3", len(files))
			}
			if err := os.Remove(files[2]); err != nil {
				t.Fatal(err)
			}
			return d
		}, []receipt.Receipt{rTwo, rAll}, verify.Tampered, []string{"truncated"}, "truncated"},
		{"rolled back to a copy", func(*testing.T) string { return one }, []receipt.Receipt{rTwo, older}, verify.Tampered, []string{"truncated"}, "truncated"},
		{"fork", func(*testing.T) string { return dir }, []receipt.Receipt{receiptOf(t, twin)}, verify.Tampered, []string{"fork"}, "fork"},
		{"another host's receipt", func(*testing.T) string { return dir }, []receipt.Receipt{receiptOf(t, otherDir)}, verify.Tampered, []string{"origin"}, "origin"},
		{"leaves at the receipt missing", func(t *testing.T) string {
			d := archivetest.CopyDir(t, dir)
			if err := os.Remove(archivetest.SegFiles(t, d)[1]); err != nil {
				t.Fatal(err)
			}
			return d
		}, []receipt.Receipt{rTwo}, verify.Tampered, []string{"missing-segment", "truncated"}, "truncated"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := verify.Dir(c.dir(t), verify.Options{Key: pub, Receipts: c.receipts})
			if err != nil {
				t.Fatal(err)
			}
			var codes []string
			for _, p := range r.Problems {
				codes = append(codes, p.Code)
				t.Logf("%s [%s]: %s", p.Class, p.Code, p.Message)
			}
			if r.Status != c.status || !slices.Equal(codes, c.codes) {
				t.Errorf("%s with problems %v, want %s with %v", r.Status, codes, c.status, c.codes)
			}
			newest, _ := receipt.Newest(c.receipts)
			want := verify.ReceiptReport{Size: newest.Checkpoint.Size, Time: newest.Time.UTC().Format(time.RFC3339), Status: c.receipt}
			if r.Receipt == nil || *r.Receipt != want {
				t.Errorf("Report.Receipt %+v, want %+v", r.Receipt, want)
			}
		})
	}

	// The message a user reads.
	r, err := verify.Dir(one, verify.Options{Key: pub, Receipts: []receipt.Receipt{rTwo}})
	if err != nil {
		t.Fatal(err)
	}
	want := "the archive holds 8 leaves, but the store acknowledged 16 leaves at 2023-11-14T22:13:20Z (receipt): the host's archive was truncated"
	if len(r.Problems) != 1 || r.Problems[0].Message != want || r.Problems[0].Class != verify.Tampered {
		t.Errorf("problems %+v, want one tampered: %s", r.Problems, want)
	}
	// Without receipts, no receipt report.
	if r, err := verify.Dir(one, verify.Options{Key: pub}); err != nil || r.Receipt != nil {
		t.Errorf("no receipts: report %+v, %v", r.Receipt, err)
	}
}

// FuzzReceipts reads arbitrary receipts files: Read must not panic, must return only receipts that
// Open accepts, and must locate any damage inside the file.
func FuzzReceipts(f *testing.F) {
	c, v := archivetest.Store(f, "store.example/fuzz")
	var file bytes.Buffer
	for _, size := range []uint64{3, 4} {
		ck, _ := tHostCheckpoint(f, size)
		r, err := c.Cosign(ck, time.Unix(1_700_000_000, 0))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(r)
		file.WriteString("receipt " + strconv.Itoa(len(r)) + "\n")
		file.Write(r)
	}
	f.Add(file.Bytes())
	f.Add([]byte("receipt 5\nabcde"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		if ck, when, err := receipt.Open(data, v); err == nil {
			if _, err := archive.ParseCheckpoint(ck.Text()); err != nil || when.Unix() < 0 {
				t.Fatalf("Open accepted %q: %+v at %v", data, ck, when)
			}
		}
		p := filepath.Join(dir, "receipts")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		rs, bad, err := receipt.Read(p, v)
		var ce *archive.CorruptError
		if err != nil && (!errors.As(err, &ce) || ce.Offset < 0 || ce.Offset >= int64(len(data))) {
			t.Fatalf("Read: %v", err)
		}
		if len(rs)+bad > len(data)/len("receipt 1\n_") {
			t.Fatalf("%d receipts and %d bad ones from %d bytes", len(rs), bad, len(data))
		}
	})
}
