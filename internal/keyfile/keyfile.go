// Package keyfile reads and writes the private and public key files of hosts and stores: a private key
// is usable only when neither it (0600) nor its directory (0700) is open to group or others.
package keyfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/auditarch/auditarch/internal/durable"
)

// ErrPermissions is wrapped when a key file or its directory is readable or writable by others.
var ErrPermissions = errors.New("permissions too open")

// WriteNew writes a new key file (durable.Create: it refuses to overwrite).
func WriteNew(path, data string, mode fs.FileMode) error {
	if err := durable.Create(path, []byte(data), mode); err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	return nil
}

// CheckPrivate fails unless path (a file or directory) is inaccessible to group and others.
func CheckPrivate(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if m := st.Mode().Perm(); m&0o077 != 0 {
		want := fs.FileMode(0o600)
		if st.IsDir() {
			want = 0o700
		}
		return fmt.Errorf("%s: mode %04o: %w (want %04o)", path, m, ErrPermissions, want)
	}
	return nil
}

// ReadPrivate reads a private key file, which must be 0600 (or stricter) in a 0700 directory.
func ReadPrivate(path, what string) (string, error) {
	if err := CheckPrivate(filepath.Dir(path)); err != nil {
		return "", err
	}
	if err := CheckPrivate(path); err != nil {
		return "", err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", what, err)
	}
	return strings.TrimSpace(string(data)), nil
}
