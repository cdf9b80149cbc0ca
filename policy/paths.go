package policy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// PathFlag says what of a file or directory ProtectPath protects (FLAG_* in bpf/common.bpf.h). Enforce
// mode refuses, with EPERM, and records (KindFile) what a process that is not protected does to it.
type PathFlag uint32

// The path flags; combine them with |.
const (
	// FlagDir: the entries of this directory. Refused: unlink, rmdir, rename out of it or into it (over an
	// entry or not), a hard link to an entry, open for write and setattr (truncate, chmod, chown, utimes)
	// of an entry; and rmdir or rename of the directory itself. Creating an entry (mkdir, mknod, symlink,
	// link into it) is let through, but open(O_CREAT) of a new file for write is refused after the kernel
	// has created it (an empty file is left). Reading is let through unless FlagNoRead is set too.
	FlagDir PathFlag = 1
	// FlagFile: the inode itself, under any of its names. Refused: open for write, unlink, rmdir, rename,
	// setattr, hard link.
	FlagFile PathFlag = 2
	// FlagNoRead, with FlagFile: also any open for read (the identity key); with FlagDir: of the entries.
	FlagNoRead PathFlag = 4
	// FlagCgroup is never set by ProtectPath: in a KindFile event's Result it says that the file was
	// cgroup.kill or cgroup.freeze of a protected process's cgroup or of one of its ancestors (Protect
	// keeps their ids), which enforce mode refuses to open for write without any ProtectPath.
	FlagCgroup PathFlag = 8

	pathFlagsAll = FlagDir | FlagFile | FlagNoRead
)

func (f PathFlag) String() string {
	var s []string
	for _, n := range []struct {
		f    PathFlag
		name string
	}{{FlagDir, "dir"}, {FlagFile, "file"}, {FlagNoRead, "noread"}, {FlagCgroup, "cgroup"}} {
		if f&n.f != 0 {
			s = append(s, n.name)
			f &^= n.f
		}
	}
	if f != 0 || len(s) == 0 {
		s = append(s, fmt.Sprintf("%#x", uint32(f)))
	}
	return strings.Join(s, "|")
}

// FileOp is what a KindFile event says was attempted (Event.Code; FILE_* in bpf/common.bpf.h).
type FileOp int32

// The file operations.
const (
	FileOpenWrite FileOp = 1 // open for write (O_WRONLY, O_RDWR); Event.ID holds the open flags
	FileOpenRead  FileOp = 2 // open for read of a FlagNoRead file; Event.ID holds the open flags
	FileUnlink    FileOp = 3
	FileRename    FileOp = 4 // Event.Name is the old name
	FileSetattr   FileOp = 5 // truncate, chmod, chown, utimes; Event.ID holds the ATTR_* bits
	FileLink      FileOp = 6
	FileRmdir     FileOp = 7
)

func (o FileOp) String() string {
	switch o {
	case FileOpenWrite:
		return "open-write"
	case FileOpenRead:
		return "open-read"
	case FileUnlink:
		return "unlink"
	case FileRename:
		return "rename"
	case FileSetattr:
		return "setattr"
	case FileLink:
		return "link"
	case FileRmdir:
		return "rmdir"
	}
	return fmt.Sprintf("fileop(%d)", int32(o))
}

// kernelDev converts a device number as stat(2) reports it (the userspace encoding, new_encode_dev's
// and glibc's: minor's low byte, then major, then minor's upper bits) to the kernel's dev_t, which the
// BPF programs read from sb->s_dev: major << 20 | minor.
func kernelDev(dev uint64) uint64 {
	return uint64(unix.Major(dev))<<20 | uint64(unix.Minor(dev))
}

// userDev is kernelDev's inverse.
func userDev(kdev uint64) uint64 {
	return unix.Mkdev(uint32(kdev>>20), uint32(kdev&(1<<20-1)))
}

// inodeKey returns the inodes map key of path (followed if it is a symbolic link) and whether it is a
// directory.
func inodeKey(path string) (detectInodeKey, bool, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return detectInodeKey{}, false, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return detectInodeKey{Dev: kernelDev(st.Dev), Ino: st.Ino}, st.Mode&unix.S_IFMT == unix.S_IFDIR, nil
}

// ProtectPath protects the file or directory path names (a symbolic link is followed) as flags say, from
// now on and replacing the flags it had. The entry names the inode (device and inode number), not the
// path: it follows the file through renames and hard links, and a new file created under the name is not
// protected. Unprotect a file before removing it yourself: a reused inode number would inherit the entry.
// Files of cgroup2 (the daemon's cgroup directory with FlagDir: cgroup.kill, cgroup.freeze, cgroup.procs,
// ...) and bpf file systems (the pin directory with FlagDir) can be protected too.
//
// Only enforce mode's programs read the entries; in detect mode they are kept in the shared pinned map
// for a later Enforce (the daemon's audit watches cover its files there).
func (g *Guard) ProtectPath(path string, flags PathFlag) error {
	if flags == 0 || flags&^pathFlagsAll != 0 || flags == FlagNoRead {
		return fmt.Errorf("policy: protect %s: invalid flags %v", path, flags)
	}
	k, dir, err := inodeKey(path)
	if err != nil {
		return fmt.Errorf("policy: protect: %w", err)
	}
	if flags&FlagDir != 0 && !dir {
		return fmt.Errorf("policy: protect %s: %v on a file that is not a directory", path, flags)
	}
	if err := g.maps.Inodes.Put(k, uint32(flags)); err != nil {
		return fmt.Errorf("policy: protect %s: %w", path, err)
	}
	return nil
}

// UnprotectPath removes the protection of the file or directory path names. It is not an error if it had
// none.
func (g *Guard) UnprotectPath(path string) error {
	k, _, err := inodeKey(path)
	if err != nil {
		return fmt.Errorf("policy: unprotect: %w", err)
	}
	if err := g.maps.Inodes.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("policy: unprotect %s: %w", path, err)
	}
	return nil
}

// PathFlags returns the protection of the file or directory path names, 0 for none.
func (g *Guard) PathFlags(path string) (PathFlag, error) {
	k, _, err := inodeKey(path)
	if err != nil {
		return 0, fmt.Errorf("policy: %w", err)
	}
	var f uint32
	if err := g.maps.Inodes.Lookup(k, &f); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return 0, nil
		}
		return 0, fmt.Errorf("policy: %s: %w", path, err)
	}
	return PathFlag(f), nil
}

// mountPoint returns the mount point of the file system holding path: its topmost ancestor on the same
// device.
func mountPoint(path string) (string, error) {
	p, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return "", &os.PathError{Op: "stat", Path: p, Err: err}
	}
	for p != "/" {
		parent := filepath.Dir(p)
		var pst unix.Stat_t
		if err := unix.Stat(parent, &pst); err != nil {
			return "", &os.PathError{Op: "stat", Path: parent, Err: err}
		}
		if pst.Dev != st.Dev {
			break
		}
		p = parent
	}
	return p, nil
}

// setBPFFS stores the mount point of the pins' bpf file system in the bpffs map, for the detect program
// that watches umount2 of it.
func (g *Guard) setBPFFS() error {
	mnt, err := mountPoint(filepath.Dir(g.dir))
	if err != nil {
		return fmt.Errorf("policy: pin directory's mount point: %w", err)
	}
	var v detectBpffsPath
	if len(mnt) >= len(v.Path) {
		return fmt.Errorf("policy: pin directory's mount point %s: longer than %d bytes", mnt, len(v.Path)-1)
	}
	for i := 0; i < len(mnt); i++ {
		v.Path[i] = int8(mnt[i])
	}
	v.Base = uint32(strings.LastIndexByte(mnt, '/') + 1)
	if err := g.maps.Bpffs.Put(uint32(0), &v); err != nil {
		return fmt.Errorf("policy: bpffs map: %w", err)
	}
	return nil
}

// cgroup2Mount returns where the cgroup v2 hierarchy is mounted ("" when it is not).
func cgroup2Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
		fields := strings.Fields(sc.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && len(fields) > 4 {
				if fields[i+1] == "cgroup2" && fields[3] == "/" {
					return unescapeMount(fields[4]), nil
				}
				break
			}
		}
	}
	return "", sc.Err()
}

// unescapeMount undoes the octal escapes (\040 for a space) of a path in /proc/self/mountinfo.
func unescapeMount(s string) string {
	var b bytes.Buffer
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// CgroupPath returns the cgroup v2 directory of the process pid (under the cgroup2 mount), e.g. for
// ProtectPath(dir, FlagDir) of the daemon's own cgroup.
func CgroupPath(pid int) (string, error) {
	mnt, err := cgroup2Mount()
	if err != nil {
		return "", fmt.Errorf("policy: cgroup2 mount: %w", err)
	}
	if mnt == "" {
		return "", fmt.Errorf("policy: no cgroup2 file system mounted")
	}
	rel, err := cgroupOf(pid)
	if err != nil {
		return "", fmt.Errorf("policy: %w", err)
	}
	return filepath.Join(mnt, rel), nil
}

// cgroupOf returns the process's cgroup v2 path ("0::PATH" in /proc/PID/cgroup).
func cgroupOf(pid int) (string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return p, nil
		}
	}
	return "", fmt.Errorf("process %d: no cgroup v2 membership in /proc/%d/cgroup", pid, pid)
}

// syncCgroups makes the cgroups map hold the ids of the protected processes' cgroups and of all their
// ancestors (detect mode watches freezing them, enforce mode refuses writes to their cgroup.kill and
// cgroup.freeze), and nothing else. Without a cgroup2 mount it is empty.
func (g *Guard) syncCgroups() error {
	want := map[uint64]bool{}
	mnt, err := cgroup2Mount()
	if err != nil {
		return fmt.Errorf("policy: cgroup2 mount: %w", err)
	}
	if mnt != "" {
		var (
			pid   uint32
			start uint64
		)
		it := g.maps.Protected.Iterate()
		for it.Next(&pid, &start) {
			rel, err := cgroupOf(int(pid))
			if err != nil || strings.HasSuffix(rel, " (deleted)") {
				continue // gone, or not in the v2 hierarchy: nothing to watch
			}
			for p := filepath.Clean("/" + rel); ; p = filepath.Dir(p) {
				var st unix.Stat_t
				if err := unix.Stat(filepath.Join(mnt, p), &st); err == nil {
					want[st.Ino] = true // a cgroup's id is its directory's inode number
				}
				if p == "/" {
					break
				}
			}
		}
		if err := it.Err(); err != nil {
			return fmt.Errorf("policy: protected map: %w", err)
		}
	}
	var (
		id    uint64
		v     uint8
		stale []uint64
	)
	it := g.maps.Cgroups.Iterate()
	for it.Next(&id, &v) {
		if !want[id] {
			stale = append(stale, id)
		}
		delete(want, id)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("policy: cgroups map: %w", err)
	}
	for _, id := range stale {
		if err := g.maps.Cgroups.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("policy: cgroups map: %w", err)
		}
	}
	for id := range want {
		if err := g.maps.Cgroups.Put(id, uint8(1)); err != nil {
			return fmt.Errorf("policy: cgroups map: %w", err)
		}
	}
	return nil
}
