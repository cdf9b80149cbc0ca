package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// record is what the harness needs from one audit record that became durable in a store.
type record struct {
	Serial uint64
	// Stamp is the event's audit timestamp, msg=audit(SEC.MSEC:SERIAL): millisecond resolution, read by
	// the kernel from its coarse clock at syscall entry, so up to one tick (4 ms at HZ=250) behind the
	// syscall, and truncated to the millisecond.
	Stamp time.Time
	// Index is the workload event's index (from a3) when this is the SYSCALL record of a workload event
	// with the harness's key, or -1.
	Index int64
}

// parseRecord reads a text audit record as auditd logs it (RAW or ENRICHED). ok is false for lines
// without a msg=audit(…) header.
func parseRecord(line []byte) (r record, ok bool) {
	const hdr = "msg=audit("
	i := bytes.Index(line, []byte(hdr))
	if i < 0 {
		return record{}, false
	}
	rest := line[i+len(hdr):]
	end := bytes.IndexByte(rest, ')')
	if end < 0 {
		return record{}, false
	}
	stamp, serial, ok := bytes.Cut(rest[:end], []byte(":"))
	if !ok {
		return record{}, false
	}
	sec, ms, ok := bytes.Cut(stamp, []byte("."))
	if !ok {
		return record{}, false
	}
	s, err1 := strconv.ParseInt(string(sec), 10, 64)
	m, err2 := strconv.ParseInt(string(ms), 10, 64)
	n, err3 := strconv.ParseUint(string(serial), 10, 64)
	if errors.Join(err1, err2, err3) != nil {
		return record{}, false
	}
	r = record{Serial: n, Stamp: time.Unix(s, m*int64(time.Millisecond)), Index: -1}
	if bytes.HasPrefix(line, []byte("type=SYSCALL ")) && bytes.Contains(line, []byte(` key="`+ruleKey+`"`)) {
		if a3, ok := field(line, "a3"); ok {
			if v, err := strconv.ParseUint(string(a3), 16, 64); err == nil && v&^indexMask == indexMagic {
				r.Index = int64(v & indexMask)
			}
		}
	}
	return r, true
}

// field returns the value of " name=value" in a record.
func field(line []byte, name string) ([]byte, bool) {
	i := bytes.Index(line, []byte(" "+name+"="))
	if i < 0 {
		return nil, false
	}
	v := line[i+len(name)+2:]
	if j := bytes.IndexAny(v, " \x1d"); j >= 0 {
		v = v[:j]
	}
	return v, true
}

// follow reads the file at path as it grows, from its start, and calls each with every complete line and
// the time the harness read it, until ctx ends; then it reads once more and returns. It wakes on inotify
// IN_MODIFY, which the kernel sends after a write() returns: for a log opened O_DSYNC (auditd's
// flush = DATA) that is after the data is on disk, so a line read after its write's event is durable. A
// read can also pick up a write still in progress (in the page cache, not yet synced); that error is at
// most one write's sync time. The file must exist and must not be rotated or truncated while followed.
func follow(ctx context.Context, path string, each func(line []byte, seen time.Time)) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("follow %s: %w", path, err)
	}
	defer f.Close()
	ifd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("inotify: %w", err)
	}
	defer unix.Close(ifd)
	if _, err := unix.InotifyAddWatch(ifd, path, unix.IN_MODIFY); err != nil {
		return fmt.Errorf("inotify watch %s: %w", path, err)
	}
	buf := make([]byte, 1<<20)
	evbuf := make([]byte, 4096)
	var partial []byte
	readAll := func() error {
		for {
			n, err := f.Read(buf)
			seen := time.Now()
			if n > 0 {
				data := buf[:n]
				if len(partial) > 0 {
					data = append(partial, data...)
					partial = nil
				}
				for {
					nl := bytes.IndexByte(data, '\n')
					if nl < 0 {
						partial = append([]byte(nil), data...)
						break
					}
					each(data[:nl], seen)
					data = data[nl+1:]
				}
			}
			if errors.Is(err, io.EOF) || (err == nil && n < len(buf)) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("read %s: %w", path, err)
			}
		}
	}
	fds := []unix.PollFd{{Fd: int32(ifd), Events: unix.POLLIN}}
	for ctx.Err() == nil {
		if _, err := unix.Poll(fds, 20); err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll inotify: %w", err)
		}
		for {
			if _, err := unix.Read(ifd, evbuf); err != nil {
				break // EAGAIN: drained
			}
		}
		if err := readAll(); err != nil {
			return err
		}
	}
	return readAll()
}
