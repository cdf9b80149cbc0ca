package vmtest

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// The initramfs is an uncompressed cpio archive in the "newc" format (magic 070701), the one the kernel
// unpacks into its rootfs: Documentation/driver-api/early-userspace/buffer-format.rst. Each entry is a
// 110-byte ASCII header of thirteen 8-digit hex fields, the NUL-terminated name, padding to a multiple of 4
// bytes, the data, padding to a multiple of 4 again. The archive ends with an entry named TRAILER!!!.
// The kernel creates no missing parent directories, so the writer emits every parent before its children.
// It is left uncompressed: under TCG the guest would spend longer inflating it than the host writing it.
const (
	newcMagic   = "070701"
	newcTrailer = "TRAILER!!!"
	newcHdrLen  = 110
)

// File type bits of a cpio mode (those of stat(2)).
const (
	modeDir  = 0o040000
	modeReg  = 0o100000
	modeChar = 0o020000
)

// cpioWriter writes a newc archive. Names are absolute or relative guest paths; they are stored relative to
// the root. The first error sticks and is returned by close.
type cpioWriter struct {
	w    *bufio.Writer
	ino  uint32
	dirs map[string]bool // directories already written
	err  error
}

func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: bufio.NewWriterSize(w, 1<<20), dirs: map[string]bool{".": true}}
}

// clean turns a guest path into the archive's form: relative to the root, without "." or ".." elements.
func clean(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// header writes one entry header and name. dev is the (major, minor) of a device node.
func (c *cpioWriter) header(name string, mode, nlink uint32, size int64, devMajor, devMinor uint32) {
	if c.err != nil {
		return
	}
	if size > 0xffffffff {
		c.err = fmt.Errorf("cpio entry %s: %d bytes is over the newc limit of 4 GiB", name, size)
		return
	}
	c.ino++
	_, err := fmt.Fprintf(c.w, "%s%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%s\x00",
		newcMagic, c.ino, mode, 0, 0, nlink, 0, size, 0, 0, devMajor, devMinor, len(name)+1, 0, name)
	if err == nil {
		err = c.pad(newcHdrLen + int64(len(name)) + 1)
	}
	c.err = err
}

// pad writes the zero bytes that align n written bytes to 4.
func (c *cpioWriter) pad(n int64) error {
	_, err := c.w.Write(make([]byte, (4-n%4)%4))
	return err
}

// mkdirAll writes dir and every parent not yet written, with mode 0755.
func (c *cpioWriter) mkdirAll(dir string) {
	dir = clean(dir)
	if dir == "" || c.dirs[dir] {
		return
	}
	c.mkdirAll(path.Dir(dir))
	c.header(dir, modeDir|0o755, 2, 0, 0, 0)
	c.dirs[dir] = true
}

// charDev writes a character device node (parents first).
func (c *cpioWriter) charDev(name string, perm fs.FileMode, major, minor uint32) {
	name = clean(name)
	c.mkdirAll(path.Dir(name))
	c.header(name, modeChar|uint32(perm.Perm()), 1, 0, major, minor)
}

// file writes a regular file of size bytes read from r (parents first).
func (c *cpioWriter) file(name string, perm fs.FileMode, size int64, r io.Reader) {
	name = clean(name)
	c.mkdirAll(path.Dir(name))
	c.header(name, modeReg|uint32(perm.Perm()), 1, size, 0, 0)
	if c.err != nil {
		return
	}
	n, err := io.Copy(c.w, io.LimitReader(r, size))
	if err == nil && n != size {
		err = fmt.Errorf("cpio entry %s: read %d of %d bytes", name, n, size)
	}
	if err == nil {
		err = c.pad(size)
	}
	c.err = err
}

// hostFile writes the host file or directory tree at src as guest path name, keeping permission bits.
func (c *cpioWriter) hostFile(name, src string) {
	if c.err != nil {
		return
	}
	c.err = walk(src, func(rel string, info fs.FileInfo) error {
		guest := path.Join(name, rel)
		if info.IsDir() {
			c.mkdirAll(guest)
			return c.err
		}
		if !info.Mode().IsRegular() {
			return fmt.Errorf("%s: only regular files and directories can be copied into the guest", src)
		}
		f, err := os.Open(path.Join(src, rel))
		if err != nil {
			return err
		}
		defer f.Close()
		c.file(guest, info.Mode(), info.Size(), f)
		return c.err
	})
}

// walk calls fn for root and, if it is a directory, everything below it, with paths relative to root
// ("." for root) and symlinks followed.
func walk(root string, fn func(rel string, info fs.FileInfo) error) error {
	info, err := os.Stat(root)
	if err != nil {
		return err
	}
	if err := fn(".", info); err != nil || !info.IsDir() {
		return err
	}
	return fs.WalkDir(os.DirFS(root), ".", func(rel string, _ fs.DirEntry, err error) error {
		if err != nil || rel == "." {
			return err
		}
		info, err := os.Stat(path.Join(root, rel))
		if err != nil {
			return err
		}
		return fn(rel, info)
	})
}

// close writes the trailer and flushes.
func (c *cpioWriter) close() error {
	c.header(newcTrailer, 0, 1, 0, 0, 0)
	if c.err == nil {
		c.err = c.w.Flush()
	}
	return c.err
}
