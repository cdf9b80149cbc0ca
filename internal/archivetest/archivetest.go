// Package archivetest holds the test helpers that packages outside archive share for building and
// handling archives. (archive's own internal tests cannot import it: it imports archive.)
package archivetest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/auditarch/auditarch/archive"
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
