// Package archivetest holds the test helpers that tests share for building, editing and handling
// archives. Internal tests of archive, archive/writer and archive/receipt cannot import it: it imports them.
package archivetest

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/receipt"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/audit/raw"
	"golang.org/x/mod/sumdb/note"
)

// Identity makes a host identity key for origin in a new directory and returns it with the path of its
// public key file.
func Identity(tb testing.TB, origin string) (*archive.Identity, string) {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "keys")
	if _, err := archive.Keygen(dir, origin); err != nil {
		tb.Fatal(err)
	}
	id, err := archive.LoadIdentity(filepath.Join(dir, archive.IdentityKeyFile))
	if err != nil {
		tb.Fatal(err)
	}
	return id, filepath.Join(dir, archive.IdentityPubFile)
}

// CopyDir copies the regular files of an archive directory into a new 0700 directory and returns it.
func CopyDir(tb testing.TB, src string) string {
	tb.Helper()
	dst := filepath.Join(tb.TempDir(), "arch")
	if err := os.Mkdir(dst, 0o700); err != nil {
		tb.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		tb.Fatal(err)
	}
	for _, e := range ents {
		if e.Type().IsRegular() {
			CopyFile(tb, filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()))
		}
	}
	return dst
}

// CopyFile copies src to dst (0600).
func CopyFile(tb testing.TB, src, dst string) {
	tb.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o600); err != nil {
		tb.Fatal(err)
	}
}

// Keys makes a host identity key for origin and returns it with its pinned verifier.
func Keys(tb testing.TB, origin string) (*archive.Identity, note.Verifier) {
	tb.Helper()
	id, pub := Identity(tb, origin)
	v, _, err := archive.LoadVerifierKey(pub)
	if err != nil {
		tb.Fatal(err)
	}
	return id, v
}

// FastOptions cut segments, epochs, checkpoints and heartbeats in fractions of a second.
func FastOptions(id *archive.Identity) writer.Options {
	return writer.Options{Identity: id, SegmentDuration: 700 * time.Millisecond, EpochDuration: 300 * time.Millisecond,
		HeartbeatInterval: 200 * time.Millisecond, FlushInterval: 20 * time.Millisecond}
}

// Event returns a small, distinct kernel event received now.
func Event(serial uint32) *raw.Event {
	now := time.Now().UnixNano()
	sec, msec := now/1e9, int32(now%1e9/1e6)
	stamp := fmt.Sprintf("audit(%d.%03d:%d): ", sec, msec, serial)
	return &raw.Event{Kind: raw.KindEvent, Serial: serial, Sec: sec, Msec: msec, Received: now, EOE: true,
		Records: []raw.Record{
			{Type: 1300, Text: []byte(stamp + fmt.Sprintf("arch=c000003e syscall=59 success=yes exit=0 pid=%d uid=0 comm=\"sh\"", 1000+serial))},
			{Type: 1309, Text: []byte(stamp + fmt.Sprintf("argc=2 a0=\"echo\" a1=\"%d\"", serial))},
		}}
}

// Write runs one writer over dir, appending n events (Event) over about d (all at once when d is 0),
// and closes it.
func Write(tb testing.TB, dir string, opts writer.Options, n int, d time.Duration) {
	tb.Helper()
	w, err := writer.Create(dir, opts)
	if err != nil {
		tb.Fatal(err)
	}
	for i := 0; i < n; i++ {
		w.Append(Event(uint32(i + 1)))
		if d > 0 {
			time.Sleep(d / time.Duration(n))
		}
	}
	if err := w.Close(); err != nil {
		tb.Fatalf("Close: %v", err)
	}
}

// SegFiles lists the segment files of dir in name order.
func SegFiles(tb testing.TB, dir string) []string {
	tb.Helper()
	files, err := archive.ListSegments(dir)
	if err != nil {
		tb.Fatal(err)
	}
	return files
}

// BlockOffsets returns the file offsets of the blocks of a segment file's bytes.
func BlockOffsets(data []byte) []int {
	var offs []int
	for off := len(archive.SegmentMagic); off+archive.BlockHeaderSize <= len(data); {
		offs = append(offs, off)
		off += archive.BlockHeaderSize + int(binary.LittleEndian.Uint32(data[off:]))
	}
	return offs
}

// Store makes a store (cosigner) key named name and returns it with its verifier.
func Store(tb testing.TB, name string) (*receipt.Cosigner, *receipt.CosignVerifier) {
	tb.Helper()
	skey, vkey, err := receipt.GenerateCosignerKey(name)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := receipt.NewCosigner(skey)
	if err != nil {
		tb.Fatal(err)
	}
	v, err := receipt.NewCosignVerifier(vkey)
	if err != nil {
		tb.Fatal(err)
	}
	if c.VerifierKey() != vkey || v.String() != vkey {
		tb.Fatalf("verifier keys differ: %s, %s, %s", vkey, c.VerifierKey(), v)
	}
	return c, v
}

// KeyFromSeed returns the note signer and verifier keys of the Ed25519 key with the given 32-byte seed
// (what host.key and host.pub would hold).
func KeyFromSeed(name string, seed []byte) (skey, vkey string, err error) {
	if len(seed) != ed25519.SeedSize {
		return "", "", fmt.Errorf("seed of %d bytes, want %d", len(seed), ed25519.SeedSize)
	}
	pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
	if vkey, err = note.NewEd25519VerifierKey(name, pub); err != nil {
		return "", "", err
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return "", "", err
	}
	skey = fmt.Sprintf("PRIVATE+KEY+%s+%08x+%s", name, v.KeyHash(), base64.StdEncoding.EncodeToString(append([]byte{1}, seed...)))
	if _, err := note.NewSigner(skey); err != nil {
		return "", "", err
	}
	return skey, vkey, nil
}

// Receipt is the store's receipt, at time at, for the signed checkpoint ck, as a verifier takes it.
func Receipt(tb testing.TB, store *receipt.Cosigner, sv *receipt.CosignVerifier, ck []byte, at time.Time) receipt.Receipt {
	tb.Helper()
	rc, err := store.Cosign(ck, at)
	if err != nil {
		tb.Fatal(err)
	}
	c, when, err := receipt.Open(rc, sv)
	if err != nil {
		tb.Fatal(err)
	}
	return receipt.Receipt{Checkpoint: c, Time: when}
}
