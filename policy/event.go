package policy

import (
	"bytes"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Kind says what was done to a protected process.
type Kind uint32

// The kinds of events, as the BPF program numbers them (KIND_* in bpf/detect.bpf.c).
const (
	KindSignal    Kind = 1 // a signal was generated for it
	KindPtrace    Kind = 2 // ptrace(PTRACE_ATTACH or PTRACE_SEIZE)
	KindProcessVM Kind = 3 // process_vm_readv or process_vm_writev
	KindBPFGetFD  Kind = 4 // bpf(*_GET_FD_BY_ID) on one of this package's programs, maps or links

	// Enforce mode only.
	KindSigIO        Kind = 5 // a SIGIO or F_SETSIG signal from a file it owns (F_SETOWN)
	KindPtraceAccess Kind = 6 // a ptrace access check: ptrace, /proc/PID/mem, process_vm_*, pidfd_getfd, ...
	KindFile         Kind = 7 // a protected file or directory entry (ProtectPath); Code is the FileOp
	KindAuditControl Kind = 9 // an audit netlink message that changes the kernel's audit state; Code is its type

	// Both modes.
	KindUmount Kind = 8 // umount of a bpf file system (detect: of the pins' one, by path); Code is the flags

	// Detect mode only.
	KindCgroupFreeze Kind = 10 // a protected process's cgroup, or an ancestor, frozen
)

func (k Kind) String() string {
	switch k {
	case KindSignal:
		return "signal"
	case KindPtrace:
		return "ptrace"
	case KindProcessVM:
		return "process_vm"
	case KindBPFGetFD:
		return "bpf_get_fd"
	case KindSigIO:
		return "sigio"
	case KindPtraceAccess:
		return "ptrace_access"
	case KindFile:
		return "file"
	case KindUmount:
		return "umount"
	case KindAuditControl:
		return "audit_control"
	case KindCgroupFreeze:
		return "cgroup_freeze"
	}
	return fmt.Sprintf("kind(%d)", uint32(k))
}

// Event is one record: who did what to which protected process, and whether it was refused (enforce mode)
// or the doer was stopped (detect mode).
type Event struct {
	Time time.Time // when the kernel ran the program (boot clock, converted to wall-clock time)
	Kind Kind

	// The doer, as the kernel saw it in the system call.
	PID       int // thread id
	TGID      int // process id
	UID, EUID uint32
	AUID      uint32 // login uid; 4294967295 when unset
	SessionID uint32 // audit session id
	Comm      string
	CgroupID  uint64 // cgroup v2 id: the inode number of its directory in the cgroup2 mount

	// The protected process (zero for KindBPFGetFD, KindFile, KindUmount, KindAuditControl,
	// KindCgroupFreeze).
	TargetPID  int // thread the signal was generated for
	TargetTGID int

	Signal unix.Signal // KindSignal, KindSigIO
	// KindSignal: si_code; KindPtrace: the request; KindPtraceAccess: the PTRACE_MODE_* bits;
	// KindBPFGetFD: the bpf command; KindFile: the FileOp; KindUmount: the umount2 flags;
	// KindAuditControl: the netlink message type (AUDIT_SET 1001, AUDIT_ADD_RULE 1011, AUDIT_DEL_RULE 1012,
	// AUDIT_TRIM 1014, AUDIT_MAKE_EQUIV 1015, AUDIT_SET_FEATURE 1018; 0: a batch too long to check).
	Code int32
	// KindSignal in detect mode: TRACE_SIGNAL_* (0 delivered, 1 ignored, 2 already pending, ...);
	// KindFile: the PathFlag bits that protect the file (FlagFile: its own entry; FlagDir: its directory's;
	// FlagCgroup: cgroup.kill or cgroup.freeze of a protected process's cgroup or an ancestor).
	Result  int32
	Syscall int // the system call number (x86_64), for all kinds but KindSignal and KindSigIO
	// KindBPFGetFD: the object id asked for; KindFile: the open flags (FileOpenWrite, FileOpenRead) or the
	// ATTR_* bits (FileSetattr); KindAuditControl: audit_status.mask of an AUDIT_SET.
	ID uint32

	// The object acted on. KindFile: the file (for FileRename the one renamed), KindUmount (enforce): the
	// file system's root directory and the mount point's name (detect: the last component of the path
	// given to umount2, no inode); KindCgroupFreeze: Ino is the cgroup's id, Name its directory's name.
	Ino  uint64
	Dev  uint64 // the file system's device number as stat(2) reports it (Stat_t.Dev); 0 when none
	Name string // at most 31 bytes of the name

	// Stopped reports that SIGSTOP was queued for the doer's process before its system call returned.
	// When it was not, StopErr says why: nil when no stop was attempted (a kernel-generated signal),
	// else the errno bpf_send_signal returned (EPERM for PID 1 or a kernel thread, EBUSY when the CPU's
	// deferred-signal slot was taken).
	Stopped bool
	StopErr error

	// Denied reports that the kernel refused the operation (enforce mode): the doer's system call failed
	// (EPERM, or EACCES for /proc/PID/mem), or for KindSigIO the signal was not delivered. Nobody is
	// stopped in enforce mode.
	Denied bool
}

func (g *Guard) decode(r *detectEvent) Event {
	e := Event{
		Time:       g.bootWall.Add(time.Duration(r.TimeNs)),
		Kind:       Kind(r.Kind),
		PID:        int(r.Pid),
		TGID:       int(r.Tgid),
		UID:        r.Uid,
		EUID:       r.Euid,
		AUID:       r.Auid,
		SessionID:  r.Sessionid,
		CgroupID:   r.CgroupId,
		TargetPID:  int(r.TargetPid),
		TargetTGID: int(r.TargetTgid),
		Code:       r.Code,
		Result:     r.Result,
		ID:         r.Id,
		Stopped:    r.Stop == 0,
		Denied:     r.Stop == verdictDenied,
	}
	if e.Kind == KindSignal || e.Kind == KindSigIO {
		e.Signal = unix.Signal(r.Sig)
	} else {
		e.Syscall = int(r.Sig)
	}
	if r.Stop < 0 {
		e.StopErr = unix.Errno(-r.Stop)
	}
	e.Comm = cString(r.Comm[:])
	e.Name = cString(r.Name[:])
	e.Ino = r.Ino
	if r.Dev != 0 {
		e.Dev = userDev(r.Dev)
	}
	return e
}

// cString returns the bytes of b up to its first NUL.
func cString(b []int8) string {
	s := make([]byte, 0, len(b))
	for _, c := range b {
		s = append(s, byte(c))
	}
	if i := bytes.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	return string(s)
}
