// Package raw holds the kernel's audit events as the archive keeps them: records verbatim, grouped by
// serial, and LOST markers. It depends on nothing, so that the archive's leaf codec, the store and the
// verifier read events without linking the netlink capture (package audit, go-libaudit).
package raw

import (
	"bytes"
	"time"
)

// Record is one kernel audit record exactly as received: the netlink message type and its text, which
// starts with the header "audit(SECONDS.MILLIS:SERIAL): ". The text is the evidence and is never rewritten.
type Record struct {
	Type uint16
	Text []byte
}

// Kind says what an Event stands for.
type Kind uint8

const (
	// KindEvent is a kernel event: the records that share one serial.
	KindEvent Kind = 1
	// KindLost records events that were lost: counted by the kernel, missing serials, or dropped locally.
	KindLost Kind = 2
)

// LostReason says how a loss was detected.
type LostReason uint8

const (
	// LostKernel is an increase of the kernel's lost counter (backlog overflow, rate limit, no memory).
	LostKernel LostReason = 1
	// LostGap is a range of serial numbers that never arrived.
	LostGap LostReason = 2
	// LostLocal counts events auditarch received but could not keep (queue bound, write failure).
	LostLocal LostReason = 3
	// LostSocket is a receive-buffer overrun on the netlink socket (ENOBUFS); the count is unknown (0) and
	// the serial gap that follows gives it.
	LostSocket LostReason = 4
	// LostBacklog counts events auditarch did not keep because what it had not yet shipped to the store
	// exceeded its configured bound (the local disk would otherwise fill while the store is away).
	LostBacklog LostReason = 5
	// LostUnregistered is a range of serial numbers the kernel issued while no daemon was registered
	// (between two runs, or after a crash), found by comparing the first serial a run receives with the
	// last one the archive holds from the same boot. The kernel printed those records to its log, or
	// dropped them (without audit=1 on its command line it keeps no hold queue), and counted nothing.
	// The LOST event's kernel time (Sec, Msec) is when the interval began (the previous run's last leaf)
	// and Received when it ended (this run's first record).
	LostUnregistered LostReason = 6
)

// String names the reason as it is printed.
func (r LostReason) String() string {
	switch r {
	case LostKernel:
		return "kernel"
	case LostGap:
		return "serial_gap"
	case LostLocal:
		return "local_drop"
	case LostSocket:
		return "socket_overrun"
	case LostBacklog:
		return "ship_backlog"
	case LostUnregistered:
		return "no_daemon"
	}
	return "unknown"
}

// Units a LOST count is in.
const (
	UnitRecords = "records"
	UnitEvents  = "events"
)

// Unit says what a LOST count of this reason counts: the kernel's lost counter counts records (one event
// may lose some of its records, and is then archived partial); every other reason counts events (serials,
// or events received whole).
func (r LostReason) Unit() string {
	if r == LostKernel {
		return UnitRecords
	}
	return UnitEvents
}

// Lost describes a KindLost event. For LostGap, First..Last is the missing serial range (inclusive, and
// may wrap past 2^32-1 to 1).
type Lost struct {
	Reason LostReason
	Count  uint64
	First  uint32
	Last   uint32
}

// Event is one reassembled event: its records verbatim in arrival order, without the EOE record.
type Event struct {
	Kind     Kind
	Serial   uint32
	Sec      int64 // kernel timestamp of the first record
	Msec     int32
	Received int64 // unix nanoseconds when the first record was read
	// EOE is true when the kernel's end-of-event record closed the event; false when it was closed by the
	// timeout (records that the kernel sends without an EOE, or an event cut short).
	EOE bool
	// Late is true when the records arrived after their serial had been emitted or reported missing.
	Late    bool
	Records []Record
	Lost    Lost

	buf []byte // backing store for the records' text
}

// exitRecord reports whether records of type t come only from the kernel's syscall-exit logging
// (audit_log_exit in kernel/auditsc.c), which writes the SYSCALL record, these, and then always an EOE.
// Other 13xx records (CONFIG_CHANGE, SECCOMP, NETFILTER_CFG, BPF...) are also logged on their own.
func exitRecord(t uint16) bool {
	switch t {
	case 1300, // SYSCALL
		1302, 1303, 1304, 1306, 1307, 1309, // PATH, IPC, SOCKETCALL, SOCKADDR, CWD, EXECVE
		1311, 1312, 1313, 1314, 1315, // IPC_SET_PERM, MQ_OPEN, MQ_SENDRECV, MQ_NOTIFY, MQ_GETSETATTR
		1317, 1318, 1321, 1322, 1323, 1327, 1337: // FD_PAIR, OBJ_PID, BPRM_FCAPS, CAPSET, MMAP, PROCTITLE, OPENAT2
		return true
	}
	return false
}

// Partial reports whether some of the event's kernel records are missing. The kernel logs a syscall's
// event (audit_log_exit in kernel/auditsc.c) as SYSCALL (with items=N), a CWD whenever a path name was
// looked up (a PATH record with a name other than "(null)"), other records, N PATH records, PROCTITLE,
// and always an EOE last; it counts every record it could not queue as lost. So an event is partial
// when it holds syscall-exit records but no EOE, an EOE but no SYSCALL, or a SYSCALL without its N PATH
// records, its CWD or its PROCTITLE. A Late event is the rest of an event already emitted, and is not
// counted again.
func (e *Event) Partial() bool {
	if e.Kind != KindEvent || e.Late {
		return false
	}
	// (verify calls this for every event: record types first, texts only where they decide.)
	exit, paths, proctitle, cwd := false, 0, false, false
	var syscall []byte
	for _, r := range e.Records {
		exit = exit || exitRecord(r.Type)
		switch r.Type {
		case 1300:
			syscall = r.Text
		case 1302:
			paths++
		case 1307:
			cwd = true
		case 1327:
			proctitle = true
		}
	}
	switch {
	case !e.EOE:
		return exit
	case syscall == nil || !proctitle:
		return true
	}
	if items, ok := itemsField(syscall); ok && items != paths {
		return true
	}
	if !cwd {
		for _, r := range e.Records {
			if r.Type == 1302 && !bytes.Contains(r.Text, []byte(" name=(null)")) {
				return true // a name was looked up: the kernel logged the CWD
			}
		}
	}
	return false
}

// itemsField reads the items=N field of a SYSCALL record.
func itemsField(text []byte) (int, bool) {
	i := bytes.Index(text, []byte(" items="))
	if i < 0 {
		return 0, false
	}
	n, k := 0, i+len(" items=")
	for ; k < len(text) && text[k] >= '0' && text[k] <= '9'; k++ {
		n = n*10 + int(text[k]-'0')
	}
	return n, k > i+len(" items=")
}

// Time returns the kernel timestamp of the event.
func (e *Event) Time() time.Time { return time.Unix(e.Sec, int64(e.Msec)*1e6) }

// Reset empties e for reuse, keeping its buffers.
func (e *Event) Reset() {
	*e = Event{Records: e.Records[:0], buf: e.buf[:0]}
}

// Add copies a record into the event's reusable buffer. When append moves the buffer, earlier texts keep
// pointing at the old array, whose bytes never change, so they stay valid.
func (e *Event) Add(typ uint16, text []byte) {
	start := len(e.buf)
	e.buf = append(e.buf, text...)
	e.Records = append(e.Records, Record{Type: typ, Text: e.buf[start:len(e.buf):len(e.buf)]})
}

// Clone returns a deep copy of e that owns its record texts (in one allocation): events passed to a sink
// are reused after the call.
func (e *Event) Clone() *Event {
	n := 0
	for _, r := range e.Records {
		n += len(r.Text)
	}
	buf := make([]byte, 0, n)
	c := *e
	c.buf = nil
	c.Records = make([]Record, len(e.Records))
	for i, r := range e.Records {
		start := len(buf)
		buf = append(buf, r.Text...)
		c.Records[i] = Record{Type: r.Type, Text: buf[start:len(buf):len(buf)]}
	}
	return &c
}

// Policy is the body of a POLICY leaf: an attempt to stop, blind or tamper with the daemon, and what the
// daemon did about it (docs/format.md, the POLICY leaf). The daemon writes it ahead of what is queued.
type Policy struct {
	Action  string   `json:"action"`  // what was attempted (PolicyAction*)
	Verdict string   `json:"verdict"` // what came of it (PolicyVerdict*)
	Sender  *Process `json:"sender,omitempty"`
	Target  *Process `json:"target,omitempty"`
	Detail  string   `json:"detail,omitempty"` // what changed, what was put back
}

// Process identifies a process in a POLICY leaf.
type Process struct {
	PID    int    `json:"pid"`
	TGID   int    `json:"tgid,omitempty"`
	UID    uint32 `json:"uid"`
	EUID   uint32 `json:"euid"`
	AUID   uint32 `json:"auid"`
	Ses    uint32 `json:"ses"`
	Comm   string `json:"comm,omitempty"`
	Exe    string `json:"exe,omitempty"`
	Cgroup string `json:"cgroup,omitempty"`
}

// POLICY leaf actions and verdicts.
const (
	PolicyActionAuditConfig = "audit-config" // the kernel's audit rules or settings were changed by someone else
	PolicyActionSignal      = "signal"       // a signal to the daemon's processes
	PolicyActionFile        = "file"         // a write to the archive or an access to the identity key by someone else
	PolicyActionThaw        = "thaw"         // a session frozen after an attempt was released (protect thaw, or its processes moved out or killed)

	PolicyVerdictDenied   = "denied"   // the kernel refused it (enforce mode)
	PolicyVerdictFrozen   = "frozen"   // the sender's session was frozen (detect mode)
	PolicyVerdictRestored = "restored" // the daemon put back what was changed
	PolicyVerdictRecorded = "recorded" // nothing could be done but record it
	PolicyVerdictKilled   = "killed"   // the doer was killed: a tracer that attached (detect mode cannot refuse it) would hold the daemon at its next signal
)
