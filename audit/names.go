package audit

import (
	"strconv"

	"github.com/elastic/go-libaudit/v2/auparse"
)

// Name tables are built once from go-libaudit's generated tables into arrays, so decoding does one index
// per lookup instead of a map lookup per record.

const (
	archX86_64 = 0xc000003e
	archI386   = 0x40000003
)

var (
	syscallsX86_64 = table(auparse.AuditSyscalls["x86_64"])
	syscallsI386   = table(auparse.AuditSyscalls["i386"])
	typeNames      = typeTable()
)

func table(m map[int]string) []string {
	n := 0
	for k := range m {
		if k+1 > n {
			n = k + 1
		}
	}
	t := make([]string, n)
	for k, v := range m {
		if k >= 0 {
			t[k] = v
		}
	}
	return t
}

func typeTable() []string {
	t := make([]string, 3000)
	for i := range t {
		name := auparse.AuditMessageType(i).String()
		if len(name) > 5 && name[:5] == "UNKNO" {
			continue
		}
		t[i] = name
	}
	return t
}

// TypeName names a record type as auditd does (SYSCALL, EXECVE, ...), or UNKNOWN[N].
func TypeName(typ uint16) string {
	if int(typ) < len(typeNames) && typeNames[typ] != "" {
		return typeNames[typ]
	}
	return "UNKNOWN[" + strconv.Itoa(int(typ)) + "]"
}

// ArchName names an AUDIT_ARCH value (x86_64, i386, ...), or its hex value.
func ArchName(arch uint32) string {
	switch arch {
	case archX86_64:
		return "x86_64"
	case archI386:
		return "i386"
	case 0:
		return ""
	}
	if n, ok := auparse.AuditArchNames[auparse.AuditArch(arch)]; ok {
		return n
	}
	return strconv.FormatUint(uint64(arch), 16)
}

// SyscallName names syscall nr of arch, or returns the number as text.
func SyscallName(arch uint32, nr int) string {
	var t []string
	switch arch {
	case archX86_64:
		t = syscallsX86_64
	case archI386:
		t = syscallsI386
	default:
		if m, ok := auparse.AuditSyscalls[ArchName(arch)]; ok {
			if n, ok := m[nr]; ok {
				return n
			}
		}
	}
	if nr >= 0 && nr < len(t) && t[nr] != "" {
		return t[nr]
	}
	return strconv.Itoa(nr)
}

// socketcallName names the call multiplexed by i386 socketcall (linux/net.h SYS_*).
func socketcallName(call uint64) string {
	names := [...]string{1: "socket", 2: "bind", 3: "connect", 4: "listen", 5: "accept", 6: "getsockname",
		7: "getpeername", 8: "socketpair", 9: "send", 10: "recv", 11: "sendto", 12: "recvfrom",
		13: "shutdown", 14: "setsockopt", 15: "getsockopt", 16: "sendmsg", 17: "recvmsg", 18: "accept4",
		19: "recvmmsg", 20: "sendmmsg"}
	if call < uint64(len(names)) && names[call] != "" {
		return names[call]
	}
	return strconv.FormatUint(call, 10)
}
