package alert

import (
	"encoding/json"
	"strconv"
	"strings"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/audit/raw"
)

// The one-line rendering (docs/alert.md, "The line"): a kind word, then key=value fields in a fixed
// order. Values that a process or a file system chose (names, paths, arguments, messages) are Go-quoted,
// so a line never holds a newline or an unescaped double quote inside a value, and a pattern that
// includes the quotes (comm="cron") cannot be matched by text inside another value. The fields come
// from one function (eventFields) for the line and for Sigma's event-level map.

// field receives one field of an event: key, value, and whether the value is quoted in the line.
type field func(key, value string, quoted bool)

// AppendEvent appends the line of a decoded event (an EVENT, LOST or POLICY leaf) to b.
func AppendEvent(b []byte, ev *audit.Event) []byte {
	b = append(b, kindWord(ev)...)
	eventFields(ev, func(k, v string, quoted bool) {
		b = appendField(b, k, v, quoted)
	})
	return b
}

// Line returns the line of a decoded event.
func Line(ev *audit.Event) string { return string(AppendEvent(nil, ev)) }

func appendField(b []byte, k, v string, quoted bool) []byte {
	b = append(b, ' ')
	b = append(b, k...)
	b = append(b, '=')
	if quoted {
		return strconv.AppendQuote(b, v)
	}
	return append(b, v...)
}

// kindWord is the line's first word: SYSCALL, the first record's type for an event without one
// (USER_AUTH, CONFIG_CHANGE...), LOST or POLICY.
func kindWord(ev *audit.Event) string {
	switch {
	case ev.Type == "LOST" || ev.Type == "POLICY":
		return ev.Type
	case ev.Kind != "":
		return ev.Kind
	}
	return "EVENT"
}

// decoded record types: their fields are rendered from the decoded event, not record by record.
func decoded(typ string) bool {
	switch typ {
	case "SYSCALL", "EXECVE", "CWD", "PATH", "SOCKADDR", "PROCTITLE", "OBJ_PID", "BPRM_FCAPS", "EOE":
		return true
	}
	return false
}

// eventFields calls f with the fields of ev in the line's order.
func eventFields(ev *audit.Event, f field) {
	if p := ev.Policy; p != nil {
		f("action", p.Action, false)
		f("verdict", p.Verdict, false)
		for _, who := range []struct {
			name string
			p    *raw.Process
		}{{"sender", p.Sender}, {"target", p.Target}} {
			if q := who.p; q != nil {
				f(who.name+"_pid", strconv.Itoa(q.PID), false)
				f(who.name+"_uid", strconv.FormatUint(uint64(q.UID), 10), false)
				f(who.name+"_auid", strconv.FormatUint(uint64(q.AUID), 10), false)
				f(who.name+"_ses", strconv.FormatUint(uint64(q.Ses), 10), false)
				f(who.name+"_comm", q.Comm, true)
				if q.Exe != "" {
					f(who.name+"_exe", q.Exe, true)
				}
			}
		}
		if p.Detail != "" {
			f("detail", p.Detail, true)
		}
		return
	}
	if ev.Type == "LOST" {
		f("reason", ev.LostReason, false)
		if ev.LostCount != nil {
			f("lost", strconv.FormatUint(*ev.LostCount, 10), false)
		}
		f("unit", ev.LostUnit, false)
		if ev.LostFirst != 0 {
			f("first_seq", strconv.FormatUint(uint64(ev.LostFirst), 10), false)
			f("last_seq", strconv.FormatUint(uint64(ev.LostLast), 10), false)
		}
		return
	}
	kv := func(k, v string) {
		if v != "" {
			f(k, v, false)
		}
	}
	str := func(k, v string) {
		if v != "" {
			f(k, v, true)
		}
	}
	num := func(k string, p *uint32) {
		if p != nil {
			f(k, strconv.FormatUint(uint64(*p), 10), false)
		}
	}
	if ev.Sys != "" {
		kv("syscall", ev.Sys)
		kv("socketcall", ev.Socket)
	}
	if ev.Success != nil {
		kv("success", strconv.FormatBool(*ev.Success))
	}
	if ev.Exit != nil {
		kv("exit", strconv.FormatInt(*ev.Exit, 10))
	}
	if ev.ExitStatus != nil {
		kv("status", strconv.FormatInt(*ev.ExitStatus, 10))
	}
	if ev.Sys != "" {
		kv("arch", ev.Arch)
	}
	for i, a := range ev.SysArgs {
		kv("a"+strconv.Itoa(i), a)
	}
	haveSyscall := ev.Kind == "SYSCALL"
	if haveSyscall {
		num("pid", ev.PID)
		num("ppid", ev.PPID)
		num("uid", ev.UID)
		num("euid", ev.EUID)
		num("suid", ev.SUID)
		num("fsuid", ev.FSUID)
		num("gid", ev.GID)
		num("egid", ev.EGID)
		num("auid", ev.AUID)
		num("ses", ev.Ses)
		kv("tty", ev.TTY)
		str("comm", ev.Comm)
		str("exe", ev.Exe)
		str("key", ev.Key)
		if len(ev.Keys) > 1 {
			str("keys", strings.Join(ev.Keys, ","))
		}
	}
	if ev.TargetPID != nil {
		kv("target_pid", strconv.Itoa(int(*ev.TargetPID)))
	}
	str("target_comm", ev.TargetComm)
	if ev.Signal != nil {
		kv("signal", strconv.Itoa(*ev.Signal))
	}
	str("cwd", ev.Cwd)
	if ev.Args != nil {
		var b strings.Builder
		b.WriteByte('[')
		for i, a := range ev.Args {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(strconv.Quote(a))
		}
		b.WriteByte(']')
		kv("args", b.String())
	}
	for _, p := range ev.Paths {
		kv("path", strconv.Quote(p.Name)+"("+strings.ToLower(p.NameType)+")")
	}
	if sa := ev.Sockaddr; sa != nil {
		switch {
		case sa.Port != nil:
			kv("sockaddr", sa.Family+":"+sa.Addr+"#"+strconv.Itoa(int(*sa.Port)))
		case sa.Abstract:
			kv("sockaddr", "unix:@"+strconv.Quote(sa.Path))
		case sa.Path != "":
			kv("sockaddr", "unix:"+strconv.Quote(sa.Path))
		default:
			kv("sockaddr", sa.Family)
		}
	}
	// The other records, field by field: the whole of an event without SYSCALL (user and configuration
	// records), and what a syscall's event carries besides (BPF, NETFILTER_CFG, CONFIG_CHANGE...).
	first := true
	for _, r := range ev.Records {
		if decoded(r.Type) {
			continue
		}
		if !first || haveSyscall {
			kv("type", r.Type)
		}
		first = false
		recordFields(r.Text, f)
	}
	if ev.Late {
		kv("late", "true")
	}
	if ev.Partial {
		kv("partial", "true")
	}
}

// untrustedKeys are the record fields the kernel and libaudit write with audit_log_untrustedstring:
// quoted when printable, hex otherwise. They are decoded and Go-quoted in the line.
var untrustedKeys = map[string]bool{
	"comm": true, "exe": true, "name": true, "cwd": true, "acct": true, "cmd": true, "key": true,
	"ocomm": true, "proctitle": true, "path": true,
}

// recordFields calls f with the fields of one record's text; msg='...' is opened and its fields follow.
func recordFields(text string, f field) {
	_, off, err := audit.ParseHeader([]byte(text))
	if err != nil {
		return
	}
	body := []byte(text[off:])
	for fs := audit.NewFields(body); fs.Next(); {
		k, v := string(fs.Key), fs.Value
		if k == "msg" && len(v) >= 2 && v[0] == '\'' {
			inner := v[1:]
			if inner[len(inner)-1] == '\'' {
				inner = inner[:len(inner)-1]
			}
			for in := audit.NewFields(inner); in.Next(); {
				value(string(in.Key), in.Value, f)
			}
			continue
		}
		value(k, v, f)
	}
}

func value(k string, v []byte, f field) {
	switch {
	case len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"':
		f(k, string(v[1:len(v)-1]), true)
	case untrustedKeys[k] && string(v) != "(null)" && string(v) != "(none)" && string(v) != "?":
		if b, ok := unhex(v); ok {
			f(k, string(b), true)
			return
		}
		f(k, string(v), false)
	default:
		f(k, string(v), false)
	}
}

// AppendControl appends the line of a control leaf (START, STOP, KEY, HEARTBEAT, CLOCK, SEAL) to b.
// POLICY leaves are events (DecodePolicy, AppendEvent).
func AppendControl(b []byte, l *archive.Leaf) []byte {
	b = append(b, l.Kind.String()...)
	num := func(k string, n int64) { b = appendField(b, k, strconv.FormatInt(n, 10), false) }
	switch l.Kind {
	case archive.LeafStart:
		var s archive.Start
		if json.Unmarshal(l.Body, &s) == nil {
			b = appendField(b, "version", s.Version, true)
			b = appendField(b, "origin", s.Origin, true)
			num("pid", int64(s.PID))
			if s.Hostname != "" {
				b = appendField(b, "hostname", s.Hostname, true)
			}
			num("epoch", int64(s.Epoch))
			if r := s.Recovered; r != nil {
				b = appendField(b, "recovered", "true", false)
				num("unsigned", int64(r.Unsigned))
				num("torn_bytes", r.TornBytes)
			}
		}
	case archive.LeafStop:
		var s archive.Stop
		if json.Unmarshal(l.Body, &s) == nil {
			b = appendField(b, "reason", s.Reason, true)
			num("events", int64(s.Events))
		}
	case archive.LeafKey:
		var s archive.Key
		if json.Unmarshal(l.Body, &s) == nil {
			num("epoch", int64(s.Epoch))
		}
	case archive.LeafHeartbeat:
		var s archive.Heartbeat
		if json.Unmarshal(l.Body, &s) == nil {
			num("events", int64(s.Events))
		}
	case archive.LeafClock:
		var s archive.Clock
		if json.Unmarshal(l.Body, &s) == nil {
			num("step_ns", s.StepNanos)
		}
	case archive.LeafSeal:
		var s archive.Seal
		if json.Unmarshal(l.Body, &s) == nil {
			num("segment", int64(s.Segment))
			num("leaves", int64(s.Leaves))
			b = appendField(b, "next", strconv.FormatBool(s.Next), false)
		}
	}
	return b
}

// Alarm is an alarm that is not a leaf: the store's (store.Alarm: fork, tampered, silence...) or the
// daemon's own (backlog shedding, shipping failing, store key mismatch).
type Alarm struct {
	Source  string // "store" or "daemon"
	Kind    string // the store's Alarm* constant, or the daemon's alarm name
	Host    string // the host it concerns, if any
	Remote  string // the peer's address, if any
	Time    int64  // unix nanoseconds
	Message string
	Held    int // alarms like it held back before it (store.Alarm.Held)
}

// AppendAlarm appends the line of an alarm to b.
func AppendAlarm(b []byte, a *Alarm) []byte {
	b = append(b, "ALARM"...)
	alarmFields(a, func(k, v string, q bool) { b = appendField(b, k, v, q) })
	return b
}

func alarmFields(a *Alarm, f field) {
	f("source", a.Source, false)
	f("kind", a.Kind, false)
	if a.Host != "" {
		f("host", a.Host, true)
	}
	if a.Remote != "" {
		f("remote", a.Remote, true)
	}
	if a.Held > 0 {
		f("held", strconv.Itoa(a.Held), false)
	}
	f("msg", a.Message, true)
}

// unhex decodes a value the kernel encoded in hexadecimal. Unlike package audit's decoder it takes upper
// case digits only, as the kernel writes them: here it also runs over values the kernel did not encode
// (Sigma's field values), and a lower-case hex-looking one there is a number (a syscall argument).
func unhex(v []byte) ([]byte, bool) {
	if len(v) == 0 || len(v)%2 != 0 {
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

// hexVal is the value of an upper-case hexadecimal digit.
func hexVal(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
