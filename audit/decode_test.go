package audit

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func pU32(v uint32) *uint32 { return &v }
func pI32(v int32) *int32   { return &v }
func pInt(v int) *int       { return &v }
func pI64(v int64) *int64   { return &v }
func pBool(v bool) *bool    { return &v }

// sysBody is an x86_64 SYSCALL record body of process 101 (see withProc). result is "success=.. exit=.. "
// or "" (exit_group has neither).
func sysBody(nr int, result string, a [4]string, comm, key string) string {
	return fmt.Sprintf(`arch=c000003e syscall=%d %sa0=%s a1=%s a2=%s a3=%s items=0 ppid=100 pid=101 auid=1000 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts0 ses=3 comm=%s exe="/usr/bin/x" subj=unconfined key=%s`,
		nr, result, a[0], a[1], a[2], a[3], comm, key)
}

// sysWant is the decoded view of sysBody without result, comm and key.
func sysWant(nr int, name string, a [4]string) Event {
	return Event{
		Type: "event", Kind: "SYSCALL", Arch: "x86_64", Sys: name, SysNr: pInt(nr), SysArgs: a[:],
		PID: pU32(101), PPID: pU32(100), UID: pU32(0), EUID: pU32(0), SUID: pU32(0), FSUID: pU32(0),
		GID: pU32(0), EGID: pU32(0), AUID: pU32(1000), Ses: pU32(3), TTY: "pts0", Exe: "/usr/bin/x",
	}
}

func with(e Event, f func(*Event)) Event { f(&e); return e }

func ok0(e *Event) { e.Success, e.Exit = pBool(true), pI64(0) }

// decodeTests are events as the reassembler emits them (EOE excluded) and their decoded view, without
// Seq, Time and Records, which every case checks the same way.
var decodeTests = []struct {
	name string
	recs []Record
	want Event
}{
	{
		name: "execve quoted args",
		recs: recs(4567,
			TypeSyscall, `arch=c000003e syscall=59 success=yes exit=0 a0=55d5 a1=55d6 a2=55d7 a3=0 items=2 ppid=100 pid=101 auid=1000 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts0 ses=3 comm="ls" exe="/usr/bin/ls" subj=unconfined key="exec"`,
			TypeExecve, `argc=3 a0="ls" a1="-la" a2="/tmp"`,
			TypeCwd, `cwd="/root"`,
			TypePath, `item=0 name="/usr/bin/ls" inode=1835050 dev=08:01 mode=0100755 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0`,
			TypePath, `item=1 name="/lib64/ld-linux-x86-64.so.2" inode=1835263 dev=08:01 mode=0100755 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0`,
			TypeProctitle, `proctitle=6C73002D6C61002F746D70`),
		want: Event{
			Type: "event", Kind: "SYSCALL", Arch: "x86_64", Sys: "execve", SysNr: pInt(59),
			Success: pBool(true), Exit: pI64(0), SysArgs: []string{"55d5", "55d6", "55d7", "0"},
			PID: pU32(101), PPID: pU32(100), UID: pU32(0), EUID: pU32(0), SUID: pU32(0), FSUID: pU32(0),
			GID: pU32(0), EGID: pU32(0), AUID: pU32(1000), Ses: pU32(3), TTY: "pts0", Comm: "ls",
			Exe: "/usr/bin/ls", Key: "exec", Cwd: "/root", Argc: pInt(3), Args: []string{"ls", "-la", "/tmp"},
			Proctitle: "ls -la /tmp",
			Paths: []Path{
				{Item: 0, Name: "/usr/bin/ls", NameType: "NORMAL", Inode: 1835050, Dev: "08:01", Mode: "0100755", OUID: pU32(0), OGID: pU32(0)},
				{Item: 1, Name: "/lib64/ld-linux-x86-64.so.2", NameType: "NORMAL", Inode: 1835263, Dev: "08:01", Mode: "0100755", OUID: pU32(0), OGID: pU32(0)},
			},
		},
	},
	{
		name: "execve hex args: space, quote, newline",
		recs: recs(4568, TypeExecve, `argc=4 a0="printf" a1=68656C6C6F20776F726C64 a2=736179202268692220 a3=610A62`),
		want: Event{Type: "event", Kind: "EXECVE", Argc: pInt(4), Args: []string{"printf", "hello world", `say "hi" `, "a\nb"}},
	},
	{
		name: "execve non-UTF-8 arg: Args lossy, ArgsHex for all",
		recs: recs(4569, TypeExecve, `argc=3 a0="cat" a1=FFFE2D78 a2="ok"`),
		want: Event{Type: "event", Kind: "EXECVE", Argc: pInt(3), Args: []string{"cat", "\xff\xfe-x", "ok"},
			ArgsHex: []string{"636174", "fffe2d78", "6f6b"}},
	},
	{
		name: "execve empty arg",
		recs: recs(4570, TypeExecve, `argc=3 a0="printf" a1="" a2="x"`),
		want: Event{Type: "event", Kind: "EXECVE", Argc: pInt(3), Args: []string{"printf", "", "x"}},
	},
	{
		name: "execve split arg within one record",
		recs: recs(4571, TypeExecve, `argc=2 a0="echo" a1_len=22 a1[0]=68656C6C6F20 a1[1]=776F726C64`),
		want: Event{Type: "event", Kind: "EXECVE", Argc: pInt(2), Args: []string{"echo", "hello world"}},
	},
	{
		name: "execve split arg continuing into the next record",
		recs: recs(4572,
			TypeExecve, `argc=3 a0="echo" a1_len=22 a1[0]=68656C6C6F20`,
			TypeExecve, ` a1[1]=776F726C64 a2="!"`),
		want: Event{Type: "event", Kind: "EXECVE", Argc: pInt(3), Args: []string{"echo", "hello world", "!"}},
	},
	{
		name: "execve argc larger than the args logged",
		recs: recs(4573, TypeExecve, `argc=3 a0="a"`),
		want: Event{Type: "event", Kind: "EXECVE", Argc: pInt(3), Args: []string{"a", "", ""}},
	},
	{
		name: "path items: (null), hex, create and parent",
		recs: recs(4600,
			TypeSyscall, sysBody(257, "success=yes exit=3 ", [4]string{"ffffff9c", "7ffd2c3a4e10", "241", "1b6"}, `"touch"`, `"files"`),
			TypeCwd, `cwd=2F686F6D652F7573657220646972`,
			TypePath, `item=0 name="/tmp/" inode=131073 dev=08:01 mode=041777 ouid=0 ogid=0 rdev=00:00 nametype=PARENT cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0`,
			TypePath, `item=1 name=2F746D702F6D792066696C65 inode=131090 dev=08:01 mode=0100644 ouid=1000 ogid=1000 rdev=00:00 nametype=CREATE cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0`,
			TypePath, `item=2 name=(null) inode=1835 dev=00:0e mode=020666 ouid=0 ogid=0 rdev=01:03 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0`,
			TypePath, `item=3 name="/nonexistent" nametype=UNKNOWN cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0`,
			TypeProctitle, `proctitle=746F756368002F746D702F6D792066696C6500`),
		want: with(sysWant(257, "openat", [4]string{"ffffff9c", "7ffd2c3a4e10", "241", "1b6"}), func(e *Event) {
			e.Success, e.Exit, e.Comm, e.Key = pBool(true), pI64(3), "touch", "files"
			e.Cwd = "/home/user dir"
			e.Proctitle = "touch /tmp/my file"
			e.Paths = []Path{
				{Item: 0, Name: "/tmp/", NameType: "PARENT", Inode: 131073, Dev: "08:01", Mode: "041777", OUID: pU32(0), OGID: pU32(0)},
				{Item: 1, Name: "/tmp/my file", NameType: "CREATE", Inode: 131090, Dev: "08:01", Mode: "0100644", OUID: pU32(1000), OGID: pU32(1000)},
				{Item: 2, NameType: "NORMAL", Inode: 1835, Dev: "00:0e", Mode: "020666", OUID: pU32(0), OGID: pU32(0)},
				{Item: 3, Name: "/nonexistent", NameType: "UNKNOWN"},
			}
		}),
	},
	{
		name: "openat fails: success=no exit=-2",
		recs: recs(4601,
			TypeSyscall, sysBody(257, "success=no exit=-2 ", [4]string{"ffffff9c", "55e0", "0", "0"}, `"cat"`, "(null)"),
			TypeCwd, `cwd="/"`,
			TypePath, `item=0 name="/etc/nope" nametype=UNKNOWN cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0`,
			TypeProctitle, `proctitle="cat"`),
		want: with(sysWant(257, "openat", [4]string{"ffffff9c", "55e0", "0", "0"}), func(e *Event) {
			e.Success, e.Exit, e.Comm = pBool(false), pI64(-2), "cat"
			e.Cwd, e.Proctitle = "/", "cat"
			e.Paths = []Path{{Item: 0, Name: "/etc/nope", NameType: "UNKNOWN"}}
		}),
	},
	{
		name: "key hex with several keys",
		recs: recs(4602, TypeSyscall, sysBody(257, "success=yes exit=3 ", [4]string{"ffffff9c", "55e0", "0", "0"}, `"cat"`, "657865630170726976")),
		want: with(sysWant(257, "openat", [4]string{"ffffff9c", "55e0", "0", "0"}), func(e *Event) {
			ok0(e)
			e.Exit, e.Comm, e.Key, e.Keys = pI64(3), "cat", "exec", []string{"exec", "priv"}
		}),
	},
	{
		name: "comm hex",
		recs: recs(4603, TypeSyscall, sysBody(257, "success=yes exit=0 ", [4]string{"0", "0", "0", "0"}, "6D7920636F6D6D", `"k"`)),
		want: with(sysWant(257, "openat", [4]string{"0", "0", "0", "0"}), func(e *Event) {
			ok0(e)
			e.Comm, e.Key = "my comm", "k"
		}),
	},
	{
		name: "kill",
		recs: recs(4700, TypeSyscall, sysBody(62, "success=yes exit=0 ", [4]string{"1f4", "f", "0", "0"}, `"kill"`, `"signals"`)),
		want: with(sysWant(62, "kill", [4]string{"1f4", "f", "0", "0"}), func(e *Event) {
			ok0(e)
			e.Comm, e.Key, e.TargetPID, e.Signal = "kill", "signals", pI32(500), pInt(15)
		}),
	},
	{
		name: "kill process group (negative pid)",
		recs: recs(4701, TypeSyscall, sysBody(62, "success=yes exit=0 ", [4]string{"ffffffffffffff85", "9", "0", "0"}, `"kill"`, "(null)")),
		want: with(sysWant(62, "kill", [4]string{"ffffffffffffff85", "9", "0", "0"}), func(e *Event) {
			ok0(e)
			e.Comm, e.TargetPID, e.Signal = "kill", pI32(-123), pInt(9)
		}),
	},
	{
		name: "kill pid|1<<32 truncated as the kernel does",
		recs: recs(4702, TypeSyscall, sysBody(62, "success=yes exit=0 ", [4]string{"100000064", "9", "0", "0"}, `"evade"`, "(null)")),
		want: with(sysWant(62, "kill", [4]string{"100000064", "9", "0", "0"}), func(e *Event) {
			ok0(e)
			e.Comm, e.TargetPID, e.Signal = "evade", pI32(100), pInt(9)
		}),
	},
	{
		name: "kill with OBJ_PID",
		recs: recs(4703,
			TypeSyscall, sysBody(62, "success=yes exit=0 ", [4]string{"64", "13", "0", "0"}, `"kill"`, "(null)"),
			TypeObjPID, `opid=100 oauid=1000 ouid=1000 oses=3 obj=unconfined ocomm="sleep"`),
		want: with(sysWant(62, "kill", [4]string{"64", "13", "0", "0"}), func(e *Event) {
			ok0(e)
			e.Comm, e.TargetPID, e.TargetComm, e.Signal = "kill", pI32(100), "sleep", pInt(19)
		}),
	},
	{
		name: "kill ESRCH",
		recs: recs(4704, TypeSyscall, sysBody(62, "success=no exit=-3 ", [4]string{"7a120", "0", "0", "0"}, `"kill"`, "(null)")),
		want: with(sysWant(62, "kill", [4]string{"7a120", "0", "0", "0"}), func(e *Event) {
			e.Success, e.Exit = pBool(false), pI64(-3)
			e.Comm, e.TargetPID, e.Signal = "kill", pI32(500000), pInt(0)
		}),
	},
	{
		name: "tkill",
		recs: recs(4705, TypeSyscall, sysBody(200, "success=yes exit=0 ", [4]string{"3e9", "6", "0", "0"}, `"t"`, "(null)")),
		want: with(sysWant(200, "tkill", [4]string{"3e9", "6", "0", "0"}), func(e *Event) {
			ok0(e)
			e.Comm, e.TargetPID, e.Signal = "t", pI32(1001), pInt(6)
		}),
	},
	{
		name: "tgkill: target is the thread group",
		recs: recs(4706, TypeSyscall, sysBody(234, "success=yes exit=0 ", [4]string{"3e8", "3e9", "6", "0"}, `"t"`, "(null)")),
		want: with(sysWant(234, "tgkill", [4]string{"3e8", "3e9", "6", "0"}), func(e *Event) {
			ok0(e)
			e.Comm, e.TargetPID, e.Signal = "t", pI32(1000), pInt(6)
		}),
	},
	{
		name: "rt_sigqueueinfo",
		recs: recs(4707, TypeSyscall, sysBody(129, "success=yes exit=0 ", [4]string{"64", "a", "7ffc1000", "0"}, `"q"`, "(null)")),
		want: with(sysWant(129, "rt_sigqueueinfo", [4]string{"64", "a", "7ffc1000", "0"}), func(e *Event) {
			ok0(e)
			e.Comm, e.TargetPID, e.Signal = "q", pI32(100), pInt(10)
		}),
	},
	{
		name: "rt_tgsigqueueinfo",
		recs: recs(4708, TypeSyscall, sysBody(297, "success=yes exit=0 ", [4]string{"64", "65", "c", "7ffc1000"}, `"q"`, "(null)")),
		want: with(sysWant(297, "rt_tgsigqueueinfo", [4]string{"64", "65", "c", "7ffc1000"}), func(e *Event) {
			ok0(e)
			e.Comm, e.TargetPID, e.Signal = "q", pI32(100), pInt(12)
		}),
	},
	{
		name: "pidfd_send_signal with OBJ_PID",
		recs: recs(4709,
			TypeSyscall, sysBody(424, "success=yes exit=0 ", [4]string{"5", "9", "0", "0"}, `"p"`, `"pidfd"`),
			TypeObjPID, `opid=4242 oauid=0 ouid=0 oses=4294967295 obj=unconfined ocomm="auditarch"`),
		want: with(sysWant(424, "pidfd_send_signal", [4]string{"5", "9", "0", "0"}), func(e *Event) {
			ok0(e)
			e.Comm, e.Key, e.TargetPID, e.TargetComm, e.Signal = "p", "pidfd", pI32(4242), "auditarch", pInt(9)
		}),
	},
	{
		name: "pidfd_send_signal without OBJ_PID: the fd is not a pid",
		recs: recs(4710, TypeSyscall, sysBody(424, "success=no exit=-9 ", [4]string{"5", "9", "0", "0"}, `"p"`, "(null)")),
		want: with(sysWant(424, "pidfd_send_signal", [4]string{"5", "9", "0", "0"}), func(e *Event) {
			e.Success, e.Exit, e.Comm, e.Signal = pBool(false), pI64(-9), "p", pInt(9)
		}),
	},
	{
		name: "exit_group: no success/exit, status is a0",
		recs: recs(4711, TypeSyscall, sysBody(231, "", [4]string{"2", "0", "3c", "7f1e9c2d5e30"}, `"false"`, `"exits"`)),
		want: with(sysWant(231, "exit_group", [4]string{"2", "0", "3c", "7f1e9c2d5e30"}), func(e *Event) {
			e.Comm, e.Key, e.ExitStatus = "false", "exits", pI64(2)
		}),
	},
	{
		name: "exit with status 255",
		recs: recs(4712, TypeSyscall, sysBody(60, "", [4]string{"ff", "0", "0", "0"}, `"x"`, "(null)")),
		want: with(sysWant(60, "exit", [4]string{"ff", "0", "0", "0"}), func(e *Event) {
			e.Comm, e.ExitStatus = "x", pI64(255)
		}),
	},
	{
		name: "i386 kill and unset auid",
		recs: recs(4713, TypeSyscall, `arch=40000003 syscall=37 success=yes exit=0 a0=64 a1=9 a2=0 a3=0 items=0 ppid=1 pid=2 auid=4294967295 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=4294967295 comm="k32" exe="/opt/k32" subj=unconfined key=(null)`),
		want: Event{Type: "event", Kind: "SYSCALL", Arch: "i386", Sys: "kill", SysNr: pInt(37), Success: pBool(true),
			Exit: pI64(0), SysArgs: []string{"64", "9", "0", "0"}, PID: pU32(2), PPID: pU32(1), UID: pU32(0),
			EUID: pU32(0), SUID: pU32(0), FSUID: pU32(0), GID: pU32(0), EGID: pU32(0), AUID: pU32(4294967295),
			Ses: pU32(4294967295), TTY: "(none)", Comm: "k32", Exe: "/opt/k32", TargetPID: pI32(100), Signal: pInt(9)},
	},
	{
		name: "i386 socketcall connect",
		recs: recs(4714, TypeSyscall, `arch=40000003 syscall=102 success=yes exit=0 a0=3 a1=ffd4e1c0 a2=0 a3=0 items=0 ppid=1 pid=2 auid=0 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=1 comm="nc" exe="/bin/nc" key=(null)`),
		want: Event{Type: "event", Kind: "SYSCALL", Arch: "i386", Sys: "socketcall", SysNr: pInt(102), Socket: "connect",
			Success: pBool(true), Exit: pI64(0), SysArgs: []string{"3", "ffd4e1c0", "0", "0"}, PID: pU32(2), PPID: pU32(1),
			UID: pU32(0), EUID: pU32(0), SUID: pU32(0), FSUID: pU32(0), GID: pU32(0), EGID: pU32(0), AUID: pU32(0),
			Ses: pU32(1), TTY: "(none)", Comm: "nc", Exe: "/bin/nc"},
	},
	{
		name: "cwd quoted, proctitle quoted",
		recs: recs(4800, TypeCwd, `cwd="/var/lib/auditarch"`, TypeProctitle, `proctitle="bash"`),
		want: Event{Type: "event", Kind: "CWD", Cwd: "/var/lib/auditarch", Proctitle: "bash"},
	},
	{
		name: "proctitle hex with trailing NUL",
		recs: recs(4801, TypeProctitle, `proctitle=2F7573722F62696E2F707974686F6E33002D63007072696E742831290000`),
		want: Event{Type: "event", Kind: "PROCTITLE", Proctitle: "/usr/bin/python3 -c print(1)"},
	},
	{
		name: "user record: msg with nested pairs",
		recs: recs(4900, 1112, `pid=1234 uid=0 auid=1000 ses=3 subj=unconfined msg='op=login id=1000 exe="/usr/sbin/sshd" hostname=10.0.0.1 addr=10.0.0.1 terminal=/dev/pts/1 res=success'`),
		want: Event{Type: "event", Kind: "USER_LOGIN", PID: pU32(1234), UID: pU32(0), AUID: pU32(1000), Ses: pU32(3),
			Msg: `op=login id=1000 exe="/usr/sbin/sshd" hostname=10.0.0.1 addr=10.0.0.1 terminal=/dev/pts/1 res=success`},
	},
	{
		name: "config change with key",
		recs: recs(4901, 1305, `auid=1000 ses=3 subj=unconfined op=add_rule key="exec" list=4 res=1`),
		want: Event{Type: "event", Kind: "CONFIG_CHANGE", AUID: pU32(1000), Ses: pU32(3), Key: "exec"},
	},
	{
		name: "unknown record types pass through",
		recs: recs(4902, 1999, `foo=bar baz="qux"`, 3333, `something new`),
		want: Event{Type: "event", Kind: "UNKNOWN[1999]"},
	},
	{
		name: "unknown record inside a syscall event",
		recs: recs(4903, TypeSyscall, sysBody(62, "success=yes exit=0 ", [4]string{"64", "9", "0", "0"}, `"kill"`, "(null)"), 1999, `pid=7 comm="other"`),
		want: with(sysWant(62, "kill", [4]string{"64", "9", "0", "0"}), func(e *Event) {
			ok0(e)
			e.Comm, e.TargetPID, e.Signal = "kill", pI32(100), pInt(9)
		}),
	},
	{
		name: "malformed record kept, not decoded",
		recs: []Record{{Type: TypeSyscall, Text: []byte("garbage without a stamp pid=1")}},
		want: Event{Type: "event", Kind: "SYSCALL"},
	},
}

func TestDecode(t *testing.T) {
	for _, tc := range decodeTests {
		t.Run(tc.name, func(t *testing.T) {
			ev := rawEvent(4567, tc.recs)
			got := Decode(ev)
			checkRecords(t, got, ev)
			if got.Seq != 4567 || got.Time != "2024-11-22T04:33:20.123000000Z" || got.NoEOE {
				t.Errorf("seq %d time %q no_eoe %v", got.Seq, got.Time, got.NoEOE)
			}
			if got.Partial != ev.Partial() {
				t.Errorf("partial %v, the event's %v", got.Partial, ev.Partial())
			}
			// (Most cases are one record of a syscall event: their completeness is TestPartial's.)
			got.Records, got.Seq, got.Time, got.Partial = nil, 0, "", false
			if !reflect.DeepEqual(*got, tc.want) {
				g, _ := json.MarshalIndent(got, "", " ")
				w, _ := json.MarshalIndent(tc.want, "", " ")
				t.Errorf("Decode:\n got %s\nwant %s", g, w)
			}
			if _, err := json.Marshal(got); err != nil {
				t.Errorf("json: %v", err)
			}
		})
	}
}

// checkRecords asserts that the decoded view keeps every record verbatim, in order, with its type name.
func checkRecords(t testing.TB, got *Event, ev *RawEvent) {
	t.Helper()
	if len(got.Records) != len(ev.Records) {
		t.Fatalf("%d records, want %d", len(got.Records), len(ev.Records))
	}
	for i, r := range ev.Records {
		if got.Records[i].Text != string(r.Text) || got.Records[i].Type != TypeName(r.Type) {
			t.Errorf("record %d = %+v, want %s %q", i, got.Records[i], TypeName(r.Type), r.Text)
		}
	}
}

func TestDecodeLost(t *testing.T) {
	ev := &RawEvent{Kind: KindLost, Sec: testSec, Msec: testMsec, EOE: true,
		Lost: Lost{Reason: LostGap, Count: 2, First: 21, Last: 22}}
	got := Decode(ev)
	if got.Type != "LOST" || got.LostReason != "serial_gap" || got.LostCount == nil || *got.LostCount != 2 ||
		got.LostFirst != 21 || got.LostLast != 22 || len(got.Records) != 0 || got.NoEOE {
		t.Errorf("Decode(lost) = %+v", got)
	}
	b, err := json.Marshal(got)
	if err != nil || !bytes.Contains(b, []byte(`"type":"LOST","reason":"serial_gap","lost":2,"unit":"events","first_seq":21,"last_seq":22,"records":[]`)) {
		t.Errorf("json %s, %v", b, err)
	}
	for r, want := range map[LostReason]string{LostKernel: "kernel", LostGap: "serial_gap", LostLocal: "local_drop",
		LostSocket: "socket_overrun", LostUnregistered: "no_daemon", 0: "unknown", 99: "unknown"} {
		if r.String() != want {
			t.Errorf("LostReason(%d) = %q, want %q", r, r.String(), want)
		}
	}
}

func TestDecodeNoEOE(t *testing.T) {
	ev := rawEvent(5, recs(5, 1112, `pid=1 uid=0 msg='op=x'`))
	ev.EOE, ev.Late = false, true
	got := Decode(ev)
	if !got.NoEOE || !got.Late {
		t.Errorf("no_eoe %v late %v", got.NoEOE, got.Late)
	}
}

// TestDecodeExecveKernel runs argv through a port of the kernel's audit_log_execve_info and back.
func TestDecodeExecveKernel(t *testing.T) {
	long := bytes.Repeat([]byte("ab cd "), 2000) // 12000 bytes with spaces: hex, split, a1_len=24000
	many := make([][]byte, 401)
	for i := range many {
		many[i] = []byte(fmt.Sprintf("--option-number-%03d=value-%03d-with-some-padding-to-fill", i, i))
	}
	manyHex := make([][]byte, 401)
	for i := range manyHex {
		manyHex[i] = []byte(fmt.Sprintf("arg %d with spaces", i))
	}
	tests := []struct {
		name        string
		argv        [][]byte
		wantRecords int    // EXECVE records the kernel writes
		wantInFirst string // a substring of the first record
	}{
		{"simple", [][]byte{[]byte("ls"), []byte("-la"), []byte("/tmp")}, 1, `argc=3 a0="ls" a1="-la" a2="/tmp"`},
		{"mixed", [][]byte{[]byte("sh"), []byte("-c"), []byte("echo 'x' \"y\"\n"), {}, {0xff, 0xc3, 0x28}}, 1, `a3="" a4=FFC328`},
		{"long hex arg split across records", [][]byte{[]byte("echo"), long, []byte("end")}, 4, `a1_len=24000 a1[0]=`},
		{"long quoted arg split", [][]byte{[]byte("echo"), bytes.Repeat([]byte("x"), 9000)}, 3, `a1_len=18000 a1[0]=`},
		{"401 args", many, 4, "argc=401 a0="},
		{"401 hex args", manyHex, 3, "argc=401 a0=61726720302077697468207370616365"},
		{"no args", nil, 1, "argc=0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bodies := kernelExecve(tc.argv)
			if len(bodies) != tc.wantRecords {
				t.Errorf("kernel wrote %d EXECVE records, want %d", len(bodies), tc.wantRecords)
			}
			if !strings.Contains(bodies[0], tc.wantInFirst) {
				t.Errorf("first record %.200q lacks %q", bodies[0], tc.wantInFirst)
			}
			for i, b := range bodies {
				if len(b) > 7500+100 {
					t.Errorf("record %d is %d bytes", i, len(b))
				}
				if i > 0 && strings.Contains(b, "argc=") {
					t.Errorf("record %d repeats argc", i)
				}
			}
			pairs := []any{TypeSyscall, sysBody(59, "success=yes exit=0 ", [4]string{"55d5", "55d6", "55d7", "0"}, `"x"`, `"exec"`)}
			for _, b := range bodies {
				pairs = append(pairs, TypeExecve, b)
			}
			ev := rawEvent(99, recs(99, pairs...))
			got := Decode(ev)
			checkRecords(t, got, ev)
			if got.Argc == nil || *got.Argc != len(tc.argv) {
				t.Fatalf("argc %v, want %d", got.Argc, len(tc.argv))
			}
			if len(got.Args) != len(tc.argv) {
				t.Fatalf("%d args, want %d", len(got.Args), len(tc.argv))
			}
			utf := true
			for i, a := range tc.argv {
				if got.Args[i] != string(a) {
					t.Errorf("arg %d = %.80q, want %.80q", i, got.Args[i], a)
				}
				utf = utf && utf8.Valid(a)
			}
			if utf != (got.ArgsHex == nil) {
				t.Errorf("ArgsHex present %v for UTF-8 %v", got.ArgsHex != nil, utf)
			}
			for i, h := range got.ArgsHex {
				if h != hex.EncodeToString(tc.argv[i]) {
					t.Errorf("ArgsHex[%d] = %q", i, h)
				}
			}
		})
	}
}

func TestTypeName(t *testing.T) {
	for typ, want := range map[uint16]string{
		1100: "USER_AUTH", 1112: "USER_LOGIN", 1300: "SYSCALL", 1302: "PATH", 1306: "SOCKADDR", 1307: "CWD",
		1309: "EXECVE", 1318: "OBJ_PID", 1320: "EOE", 1327: "PROCTITLE", 0: "UNKNOWN[0]", 1999: "UNKNOWN[1999]",
		3000: "UNKNOWN[3000]", 9999: "UNKNOWN[9999]", 65535: "UNKNOWN[65535]",
	} {
		if got := TypeName(typ); got != want {
			t.Errorf("TypeName(%d) = %q, want %q", typ, got, want)
		}
	}
}

func TestNames(t *testing.T) {
	if got := ArchName(0xc00000b7); got != "aarch64" {
		t.Errorf("ArchName(aarch64) = %q", got)
	}
	if got := SyscallName(0xc00000b7, 129); got != "kill" {
		t.Errorf("aarch64 syscall 129 = %q", got)
	}
	if got := ArchName(0x12345); got != "12345" {
		t.Errorf("unknown arch = %q", got)
	}
	for _, nr := range []int{-1, 100000} {
		if got := SyscallName(archX86_64, nr); got != strconv.Itoa(nr) {
			t.Errorf("SyscallName(x86_64, %d) = %q", nr, got)
		}
	}
	if got := SyscallName(0x12345, 5); got != "5" {
		t.Errorf("SyscallName(unknown arch) = %q", got)
	}
	if got := socketcallName(99); got != "99" {
		t.Errorf("socketcallName(99) = %q", got)
	}
}
