package audit

import (
	"encoding/hex"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/auditarch/auditarch/audit/raw"
)

// Event is the decoded view of a RawEvent. It is derived: the raw records in Records are the evidence and
// are always kept beside it. Fields absent from the records are omitted, never invented.
type Event struct {
	Index uint64 `json:"index"` // position in the archive, set by the reader
	Seq   uint32 `json:"seq"`   // kernel serial number
	Time  string `json:"time"`  // kernel timestamp, RFC 3339 with nanoseconds, UTC
	Type  string `json:"type"`  // "event" or "LOST"
	Kind  string `json:"record_type,omitempty"`
	Late  bool   `json:"late,omitempty"`
	NoEOE bool   `json:"no_eoe,omitempty"`
	// Partial: some of the event's kernel records are missing (raw.Event.Partial).
	Partial bool   `json:"partial,omitempty"`
	Arch    string `json:"arch,omitempty"`
	Sys     string `json:"syscall,omitempty"`
	SysNr   *int   `json:"syscall_nr,omitempty"`
	Socket  string `json:"socketcall,omitempty"` // i386 socketcall: the call it multiplexes

	Success    *bool    `json:"success,omitempty"`
	Exit       *int64   `json:"exit,omitempty"`
	ExitStatus *int64   `json:"exit_status,omitempty"` // exit and exit_group: the status argument
	SysArgs    []string `json:"syscall_args,omitempty"`

	PID   *uint32  `json:"pid,omitempty"`
	PPID  *uint32  `json:"ppid,omitempty"`
	UID   *uint32  `json:"uid,omitempty"`
	EUID  *uint32  `json:"euid,omitempty"`
	SUID  *uint32  `json:"suid,omitempty"`
	FSUID *uint32  `json:"fsuid,omitempty"`
	GID   *uint32  `json:"gid,omitempty"`
	EGID  *uint32  `json:"egid,omitempty"`
	AUID  *uint32  `json:"auid,omitempty"`
	Ses   *uint32  `json:"ses,omitempty"`
	TTY   string   `json:"tty,omitempty"`
	Comm  string   `json:"comm,omitempty"`
	Exe   string   `json:"exe,omitempty"`
	Key   string   `json:"key,omitempty"`
	Keys  []string `json:"keys,omitempty"` // when a rule carries several keys

	Cwd       string    `json:"cwd,omitempty"`
	Argc      *int      `json:"argc,omitempty"`
	Args      []string  `json:"args,omitempty"`
	ArgsHex   []string  `json:"args_hex,omitempty"` // every argument in hex, present when one is not valid UTF-8
	Proctitle string    `json:"proctitle,omitempty"`
	Paths     []Path    `json:"paths,omitempty"`
	Sockaddr  *Sockaddr `json:"sockaddr,omitempty"`

	TargetPID  *int32 `json:"target_pid,omitempty"`
	TargetComm string `json:"target_comm,omitempty"`
	Signal     *int   `json:"signal,omitempty"`

	Msg string `json:"msg,omitempty"` // userspace records: the msg='...' payload

	// Policy is a POLICY leaf's body: an attempt on the daemon and what came of it (Type "POLICY").
	Policy *raw.Policy `json:"policy,omitempty"`

	LostReason string  `json:"reason,omitempty"`
	LostCount  *uint64 `json:"lost,omitempty"`
	LostUnit   string  `json:"unit,omitempty"` // what LostCount counts: records or events
	LostFirst  uint32  `json:"first_seq,omitempty"`
	LostLast   uint32  `json:"last_seq,omitempty"`

	Records []RecordView `json:"records"`
}

// Path is one PATH record.
type Path struct {
	Item     int     `json:"item"`
	Name     string  `json:"name,omitempty"`
	NameType string  `json:"nametype,omitempty"`
	Inode    uint64  `json:"inode,omitempty"`
	Dev      string  `json:"dev,omitempty"`
	Mode     string  `json:"mode,omitempty"` // octal, as the kernel writes it
	OUID     *uint32 `json:"ouid,omitempty"`
	OGID     *uint32 `json:"ogid,omitempty"`
}

// RecordView is a raw record as shown: its type name and verbatim text.
type RecordView struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// TimeLayout is RFC 3339 with a fixed nine-digit fraction.
const TimeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// Record types decoded here (linux/audit.h).
const (
	TypeSyscall   = 1300
	TypePath      = 1302
	TypeSockaddr  = 1306
	TypeCwd       = 1307
	TypeExecve    = 1309
	TypeObjPID    = 1318
	TypeProctitle = 1327
)

// DecodePolicy is the decoded view of a POLICY leaf written at t (unix ns).
func DecodePolicy(p *raw.Policy, t int64) *Event {
	return &Event{Type: "POLICY", Time: time.Unix(0, t).UTC().Format(TimeLayout), Policy: p, Records: []RecordView{}}
}

// Decode derives the decoded view of ev. It never fails: a field it cannot read is left out, and the raw
// records are always there.
func Decode(ev *RawEvent) *Event {
	out := &Event{Seq: ev.Serial, Late: ev.Late}
	out.Time = time.Unix(ev.Sec, int64(ev.Msec)*1e6).UTC().Format(TimeLayout)
	out.Records = make([]RecordView, len(ev.Records))
	for i, r := range ev.Records {
		out.Records[i] = RecordView{Type: TypeName(r.Type), Text: string(r.Text)}
	}
	if ev.Kind == KindLost {
		out.Type = "LOST"
		out.LostReason = ev.Lost.Reason.String()
		n := ev.Lost.Count
		out.LostCount, out.LostUnit = &n, ev.Lost.Reason.Unit()
		out.LostFirst, out.LostLast = ev.Lost.First, ev.Lost.Last
		return out
	}
	out.Type = "event"
	out.NoEOE, out.Partial = !ev.EOE, ev.Partial()
	if len(ev.Records) > 0 {
		out.Kind = TypeName(ev.Records[0].Type)
	}
	var ex execveArgs
	var sys syscallArgs
	// Process fields come from the SYSCALL record when there is one: other records of the event (a
	// CONFIG_CHANGE's key=, say) describe their object, not the process.
	haveSyscall := false
	for _, r := range ev.Records {
		if r.Type == TypeSyscall {
			haveSyscall = true
		}
	}
	for _, r := range ev.Records {
		_, off, err := ParseHeader(r.Text)
		if err != nil {
			continue
		}
		body := r.Text[off:]
		switch r.Type {
		case TypeSyscall:
			out.Kind = "SYSCALL"
			sys = decodeSyscall(out, body)
		case TypeExecve:
			ex.add(body)
		case TypeCwd:
			if v, ok := Lookup(body, "cwd"); ok {
				out.Cwd, _ = untrusted(v)
			}
		case TypePath:
			out.Paths = append(out.Paths, decodePath(body))
		case TypeSockaddr:
			if v, ok := Lookup(body, "saddr"); ok {
				if b, err := hex.DecodeString(string(v)); err == nil {
					out.Sockaddr = DecodeSockaddr(b)
				}
			}
		case TypeProctitle:
			if v, ok := Lookup(body, "proctitle"); ok {
				s, _ := untrusted(v)
				out.Proctitle = proctitle(s)
			}
		case TypeObjPID:
			for f := NewFields(body); f.Next(); {
				switch string(f.Key) {
				case "opid":
					if n, err := strconv.ParseInt(string(f.Value), 10, 32); err == nil && out.TargetPID == nil {
						p := int32(n)
						out.TargetPID = &p
					}
				case "ocomm":
					if out.TargetComm == "" {
						out.TargetComm, _ = untrusted(f.Value)
					}
				}
			}
		default:
			if !haveSyscall {
				decodeProcess(out, body)
			}
		}
	}
	if ex.seen {
		argc := ex.argc
		out.Argc = &argc
		out.Args, out.ArgsHex = ex.strings()
	}
	if haveSyscall {
		signalTarget(out, sys)
	}
	return out
}

// syscallArgs holds a0..a3 of a SYSCALL record (the raw register values).
type syscallArgs struct {
	a [4]uint64
	n int
}

func decodeSyscall(out *Event, body []byte) syscallArgs {
	var sa syscallArgs
	var arch uint32
	nr := -1
	for f := NewFields(body); f.Next(); {
		v := f.Value
		switch string(f.Key) {
		case "arch":
			if n, err := strconv.ParseUint(string(v), 16, 32); err == nil {
				arch = uint32(n)
			}
		case "syscall":
			if n, err := strconv.Atoi(string(v)); err == nil {
				nr = n
			}
		case "success":
			b := string(v) == "yes"
			out.Success = &b
		case "exit":
			if n, err := strconv.ParseInt(string(v), 10, 64); err == nil {
				out.Exit = &n
			}
		case "a0", "a1", "a2", "a3":
			i := int(f.Key[1] - '0')
			if n, err := strconv.ParseUint(string(v), 16, 64); err == nil {
				sa.a[i] = n
			}
			if i+1 > sa.n {
				sa.n = i + 1
			}
			out.SysArgs = append(out.SysArgs, string(v))
		case "key":
			setKeys(out, v)
		default:
			decodeProcessField(out, f.Key, v)
		}
	}
	out.Arch = ArchName(arch)
	if nr >= 0 {
		n := nr
		out.SysNr = &n
		out.Sys = SyscallName(arch, nr)
	}
	switch out.Sys {
	case "socketcall":
		out.Socket = socketcallName(sa.a[0])
	case "exit", "exit_group":
		st := int64(int32(sa.a[0]))
		out.ExitStatus = &st
	}
	return sa
}

// signalTarget fills target_pid and signal for the kill family. A pid argument is truncated to pid_t
// (the low 32 bits) as the kernel does. An OBJ_PID record, when present, names the real target.
func signalTarget(out *Event, sa syscallArgs) {
	var pidArg, sigArg int
	switch out.Sys {
	case "kill", "tkill", "rt_sigqueueinfo":
		pidArg, sigArg = 0, 1
	case "tgkill", "rt_tgsigqueueinfo":
		pidArg, sigArg = 0, 2
	case "pidfd_send_signal":
		pidArg, sigArg = -1, 1
	default:
		return
	}
	sig := int(int32(sa.a[sigArg]))
	out.Signal = &sig
	if out.TargetPID == nil && pidArg >= 0 {
		p := int32(sa.a[pidArg])
		out.TargetPID = &p
	}
}

func decodeProcess(out *Event, body []byte) {
	for f := NewFields(body); f.Next(); {
		switch string(f.Key) {
		case "msg":
			if out.Msg == "" {
				v := f.Value
				if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
					v = v[1 : len(v)-1]
				}
				out.Msg = string(v)
			}
		case "key":
			if out.Key == "" {
				setKeys(out, f.Value)
			}
		default:
			decodeProcessField(out, f.Key, f.Value)
		}
	}
}

func decodeProcessField(out *Event, key, v []byte) {
	var dst **uint32
	switch string(key) {
	case "pid":
		dst = &out.PID
	case "ppid":
		dst = &out.PPID
	case "uid":
		dst = &out.UID
	case "euid":
		dst = &out.EUID
	case "suid":
		dst = &out.SUID
	case "fsuid":
		dst = &out.FSUID
	case "gid":
		dst = &out.GID
	case "egid":
		dst = &out.EGID
	case "auid":
		dst = &out.AUID
	case "ses":
		dst = &out.Ses
	case "tty":
		if out.TTY == "" {
			out.TTY = string(v)
		}
		return
	case "comm":
		if out.Comm == "" {
			out.Comm, _ = untrusted(v)
		}
		return
	case "exe":
		if out.Exe == "" {
			out.Exe, _ = untrusted(v)
		}
		return
	default:
		return
	}
	if *dst != nil {
		return
	}
	if n, err := strconv.ParseUint(string(v), 10, 32); err == nil {
		u := uint32(n)
		*dst = &u
	}
}

// setKeys decodes key=: quoted, (null), or hex holding several keys separated by 0x01.
func setKeys(out *Event, v []byte) {
	s, ok := untrusted(v)
	if !ok || s == "" {
		return
	}
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == 0x01 {
			out.Keys = append(out.Keys, s[start:i])
			start = i + 1
		}
	}
	out.Key = out.Keys[0]
	if len(out.Keys) == 1 {
		out.Keys = nil
	}
}

func decodePath(body []byte) Path {
	var p Path
	for f := NewFields(body); f.Next(); {
		v := f.Value
		switch string(f.Key) {
		case "item":
			p.Item, _ = strconv.Atoi(string(v))
		case "name":
			p.Name, _ = untrusted(v)
		case "nametype":
			p.NameType = string(v)
		case "inode":
			p.Inode, _ = strconv.ParseUint(string(v), 10, 64)
		case "dev":
			p.Dev = string(v)
		case "mode":
			p.Mode = string(v)
		case "ouid", "ogid":
			if n, err := strconv.ParseUint(string(v), 10, 32); err == nil {
				u := uint32(n)
				if f.Key[1] == 'u' {
					p.OUID = &u
				} else {
					p.OGID = &u
				}
			}
		}
	}
	return p
}

// untrusted decodes a value the kernel logs with audit_log_untrustedstring: "quoted" when printable,
// upper-case hex when it holds a space, quote, control or non-ASCII byte, and (null) or (none) when absent.
func untrusted(v []byte) (string, bool) {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		return string(v[1 : len(v)-1]), true
	}
	if string(v) == "(null)" || string(v) == "(none)" {
		return "", false
	}
	if b, ok := unhex(v); ok {
		return string(b), true
	}
	return string(v), true
}

func unhex(v []byte) ([]byte, bool) {
	if len(v)%2 != 0 {
		return nil, false
	}
	out := make([]byte, len(v)/2)
	for i := 0; i < len(v); i += 2 {
		h, ok1 := hexVal(v[i])
		l, ok2 := hexVal(v[i+1])
		if !ok1 || !ok2 {
			return nil, false
		}
		out[i/2] = h<<4 | l
	}
	return out, true
}

func hexVal(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// proctitle turns the NUL-separated command line into one string, as ausearch -i shows it.
func proctitle(s string) string {
	b := []byte(s)
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	for i, c := range b {
		if c == 0 {
			b[i] = ' '
		}
	}
	return string(b)
}

// execveArgs rebuilds argv from one or more EXECVE records. The kernel writes each argument as aN="..." or
// aN=HEX; an argument too long for one record as aN_len=TOTAL followed by chunks aN[0]=, aN[1]=, ...
// which may continue in the next EXECVE record.
type execveArgs struct {
	seen bool
	argc int
	args [][]byte
}

func (x *execveArgs) add(body []byte) {
	x.seen = true
	for f := NewFields(body); f.Next(); {
		k := f.Key
		if string(k) == "argc" {
			if n, err := strconv.Atoi(string(f.Value)); err == nil && n >= 0 && n < 1<<20 {
				x.argc = n
			}
			continue
		}
		if len(k) < 2 || k[0] != 'a' || k[1] < '0' || k[1] > '9' {
			continue
		}
		i := 1
		idx := 0
		for i < len(k) && k[i] >= '0' && k[i] <= '9' {
			idx = idx*10 + int(k[i]-'0')
			i++
			if idx >= 1<<20 {
				return
			}
		}
		rest := string(k[i:])
		if rest == "_len" {
			continue // the chunks carry the bytes; the length is implied
		}
		if rest != "" && (rest[0] != '[' || rest[len(rest)-1] != ']') {
			continue
		}
		for len(x.args) <= idx {
			x.args = append(x.args, nil)
		}
		var chunk []byte
		v := f.Value
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			chunk = v[1 : len(v)-1]
		} else if b, ok := unhex(v); ok {
			chunk = b
		} else {
			chunk = v
		}
		if x.args[idx] == nil {
			x.args[idx] = make([]byte, 0, len(chunk))
		}
		x.args[idx] = append(x.args[idx], chunk...)
	}
}

func (x *execveArgs) strings() ([]string, []string) {
	n := len(x.args)
	if x.argc > n {
		n = x.argc
	}
	out := make([]string, n)
	valid := true
	for i := range out {
		if i < len(x.args) {
			out[i] = string(x.args[i])
		}
		if !utf8.ValidString(out[i]) {
			valid = false
		}
	}
	if valid {
		return out, nil
	}
	hx := make([]string, n)
	for i := range out {
		hx[i] = hex.EncodeToString([]byte(out[i]))
	}
	return out, hx
}
