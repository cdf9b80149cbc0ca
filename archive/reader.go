package archive

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/auditarch/auditarch/audit"
)

// Reader reads every capture file of a directory in order, frame by frame.
type Reader struct {
	files []string
	cur   int
	data  []byte
	off   int64
	index uint64
	ev    audit.RawEvent
}

// Open lists the capture files in dir. It fails if dir holds none.
func Open(dir string) (*Reader, error) {
	files, err := filepath.Glob(filepath.Join(dir, filePattern))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("open archive: %w", err)
		}
		return nil, fmt.Errorf("open archive: no capture files in %s", dir)
	}
	sort.Strings(files) // names start with the UTC creation time
	return &Reader{files: files, cur: -1}, nil
}

// Next returns the next event and its index (its position across all files, from 0). The event is valid
// until the next call. At the end it returns io.EOF. A frame that does not verify yields a *CorruptError;
// the reader then moves on to the next file, so the caller may continue past it.
func (r *Reader) Next() (*audit.RawEvent, uint64, error) {
	for {
		if r.data == nil || r.off >= int64(len(r.data)) {
			if err := r.nextFile(); err != nil {
				return nil, 0, err
			}
			continue
		}
		path := r.files[r.cur]
		rest := r.data[r.off:]
		if len(rest) < frameHeader {
			return nil, 0, r.corrupt(path, "torn frame header at end of file")
		}
		n := binary.LittleEndian.Uint32(rest)
		sum := binary.LittleEndian.Uint32(rest[4:])
		if n > maxFrame || int64(n) > int64(len(rest)-frameHeader) {
			return nil, 0, r.corrupt(path, fmt.Sprintf("frame of %d bytes runs past the end of the file (torn write)", n))
		}
		payload := rest[frameHeader : frameHeader+int(n)]
		if crc32.Checksum(payload, castagnoli) != sum {
			return nil, 0, r.corrupt(path, "frame checksum mismatch")
		}
		if err := DecodeFrame(payload, &r.ev); err != nil {
			return nil, 0, r.corrupt(path, err.Error())
		}
		r.off += frameHeader + int64(n)
		i := r.index
		r.index++
		return &r.ev, i, nil
	}
}

func (r *Reader) corrupt(path, reason string) error {
	err := &CorruptError{Path: path, Offset: r.off, Reason: reason}
	r.data = nil // continue with the next file
	return err
}

func (r *Reader) nextFile() error {
	r.cur++
	if r.cur >= len(r.files) {
		return io.EOF
	}
	data, err := os.ReadFile(r.files[r.cur])
	if err != nil {
		return fmt.Errorf("read capture file: %w", err)
	}
	if !bytes.HasPrefix(data, []byte(fileMagic)) {
		return &CorruptError{Path: r.files[r.cur], Reason: "not a capture log v0 file (bad magic)"}
	}
	r.data, r.off = data, int64(len(fileMagic))
	return nil
}

// IsCorrupt reports whether err is about a damaged or torn capture file.
func IsCorrupt(err error) bool { return errors.Is(err, ErrCorrupt) }
