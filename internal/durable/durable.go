// Package durable holds the file operations whose order makes data survive a crash: a write that resumes
// after a short write, a file created and fsynced with its directory, and the fsyncs themselves.
package durable

import (
	"io/fs"
	"os"
	"path/filepath"
)

// WriteAll writes all of b to f, resuming after short writes. On error some of b may be in f.
func WriteAll(f *os.File, b []byte) error {
	for len(b) > 0 {
		n, err := f.Write(b)
		b = b[n:]
		if err != nil {
			return err
		}
	}
	return nil
}

// Create creates path (it must not exist) holding data with mode, fsyncs it and then its directory: once
// Create returns nil, the file and its name survive a crash.
func Create(path string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if err := WriteAll(f, data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// Replace replaces path with a file holding data: a temporary file beside it is created and fsynced,
// renamed over path, and the directory fsynced. A crash leaves the old file or the new one, never a torn
// one.
func Replace(path string, data []byte, mode fs.FileMode) error {
	tmp := path + ".tmp"
	os.Remove(tmp)
	if err := Create(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// SyncDir fsyncs a directory: the names created, renamed or removed in it survive a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// SyncFile fsyncs the file at path.
func SyncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
