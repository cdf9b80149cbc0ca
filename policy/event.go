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

	// The protected process (zero for KindBPFGetFD).
	TargetPID  int // thread the signal was generated for
	TargetTGID int

	Signal unix.Signal // KindSignal, KindSigIO
	// KindSignal: si_code; KindPtrace: the request; KindPtraceAccess: the PTRACE_MODE_* bits;
	// KindBPFGetFD: the bpf command.
	Code    int32
	Result  int32  // KindSignal in detect mode: TRACE_SIGNAL_* (0 delivered, 1 ignored, 2 already pending, ...)
	Syscall int    // the system call number (x86_64), for all kinds but KindSignal and KindSigIO
	ID      uint32 // KindBPFGetFD: the object id asked for

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
	comm := make([]byte, 0, len(r.Comm))
	for _, c := range r.Comm {
		comm = append(comm, byte(c))
	}
	if i := bytes.IndexByte(comm, 0); i >= 0 {
		comm = comm[:i]
	}
	e.Comm = string(comm)
	return e
}
