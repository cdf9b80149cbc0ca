package audit

import (
	"encoding/hex"
	"reflect"
	"testing"
)

func u16(v uint16) *uint16 { return &v }
func u32(v uint32) *uint32 { return &v }

// sockaddrTests are saddr= values as the kernel logs them (upper-case hex of the bytes user space passed).
var sockaddrTests = []struct {
	name  string
	saddr string
	want  Sockaddr
}{
	{"inet loopback", "02001F907F0000010000000000000000", Sockaddr{Family: "inet", Addr: "127.0.0.1", Port: u16(8080)}},
	{"inet dns", "020000350A0000020000000000000000", Sockaddr{Family: "inet", Addr: "10.0.0.2", Port: u16(53)}},
	{"inet exactly 8 bytes", "020001BBC0A80001", Sockaddr{Family: "inet", Addr: "192.168.0.1", Port: u16(443)}},
	{"inet6 loopback", "0A0001BB000000000000000000000000000000000000000100000000",
		Sockaddr{Family: "inet6", Addr: "::1", Port: u16(443)}},
	{"inet6 link-local with scope", "0A00162E00000000FE80000000000000000000000000000102000000",
		Sockaddr{Family: "inet6", Addr: "fe80::1%2", Port: u16(5678)}},
	{"inet6 v4-mapped", "0A0000500000000000000000000000000000FFFF7F00000100000000",
		Sockaddr{Family: "inet6", Addr: "::ffff:127.0.0.1", Port: u16(80)}},
	{"inet6 without scope field", "0A0001BB0000000000000000000000000000000000000001",
		Sockaddr{Family: "inet6", Addr: "::1", Port: u16(443)}},
	{"unix path", "01002F72756E2F73797374656D642F6A6F75726E616C2F736F636B657400",
		Sockaddr{Family: "unix", Path: "/run/systemd/journal/socket"}},
	{"unix path with trailing junk", "01002F746D702F7800414141",
		Sockaddr{Family: "unix", Path: "/tmp/x"}},
	{"unix path unterminated", "01002F746D702F78", Sockaddr{Family: "unix", Path: "/tmp/x"}},
	{"unix abstract", "0100" + "00" + "2F746D702F2E5831312D756E69782F5830",
		Sockaddr{Family: "unix", Path: "/tmp/.X11-unix/X0", Abstract: true}},
	{"unix abstract with NUL inside", "0100" + "00" + "610062", Sockaddr{Family: "unix", Path: "a\x00b", Abstract: true}},
	{"unix unnamed", "0100", Sockaddr{Family: "unix"}},
	{"netlink", "100000003930000001000000", Sockaddr{Family: "netlink", NLPid: u32(12345), Groups: u32(1)}},
	{"netlink kernel", "100000000000000000000000", Sockaddr{Family: "netlink", NLPid: u32(0), Groups: u32(0)}},
	{"netlink short", "10000000393000", Sockaddr{Family: "netlink", Raw: "10000000393000"}},
	{"packet", "1100000300000002000100060800270000000000", Sockaddr{Family: "packet", Raw: "1100000300000002000100060800270000000000"}},
	{"vsock", "2800000000000000020000000000000000000000", Sockaddr{Family: "vsock", Raw: "2800000000000000020000000000000000000000"}},
	{"unknown family", "FF7F0102", Sockaddr{Family: "32767", Raw: "ff7f0102"}},
	{"unspec", "0000", Sockaddr{Family: "unspec", Raw: "0000"}},
	{"inet too short", "02000050", Sockaddr{Family: "inet", Raw: "02000050"}},
	{"inet6 too short", "0A0001BB00000000", Sockaddr{Family: "inet6", Raw: "0a0001bb00000000"}},
	{"one byte", "02", Sockaddr{Family: "unknown", Raw: "02"}},
	{"empty", "", Sockaddr{Family: "unknown"}},
}

func TestDecodeSockaddr(t *testing.T) {
	for _, tc := range sockaddrTests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := hex.DecodeString(tc.saddr)
			if err != nil {
				t.Fatal(err)
			}
			got := DecodeSockaddr(b)
			if got == nil {
				t.Fatal("DecodeSockaddr returned nil")
			}
			want := tc.want
			if want.Raw != "" {
				want.Raw = hex.EncodeToString(b) // Raw is lower-case hex of all the bytes
			}
			if !reflect.DeepEqual(*got, want) {
				t.Errorf("DecodeSockaddr(%s)\n got %+v\nwant %+v", tc.saddr, fmtSockaddr(got), fmtSockaddr(&want))
			}
		})
	}
}

// TestDecodeSockaddrEvent checks the same addresses through Decode, as SOCKADDR records of a connect event.
func TestDecodeSockaddrEvent(t *testing.T) {
	for _, tc := range sockaddrTests {
		if tc.saddr == "" {
			continue // the kernel never logs an empty saddr
		}
		t.Run(tc.name, func(t *testing.T) {
			ev := Decode(rawEvent(700, recs(700,
				TypeSyscall, `arch=c000003e syscall=42 success=yes exit=0 a0=3 a1=7ffc8e5f3a10 a2=10 a3=0 items=0 ppid=1 pid=812 auid=4294967295 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=4294967295 comm="curl" exe="/usr/bin/curl" subj=unconfined key="net"`,
				TypeSockaddr, "saddr="+tc.saddr,
				TypeProctitle, "proctitle=6375726C00687474703A2F2F6C6F63616C686F7374")))
			if ev.Sockaddr == nil {
				t.Fatal("no sockaddr decoded")
			}
			want := DecodeSockaddr(mustHex(t, tc.saddr))
			if !reflect.DeepEqual(ev.Sockaddr, want) {
				t.Errorf("Decode sockaddr %+v; DecodeSockaddr %+v", fmtSockaddr(ev.Sockaddr), fmtSockaddr(want))
			}
			if ev.Sys != "connect" || ev.Key != "net" || ev.Proctitle != "curl http://localhost" {
				t.Errorf("sys=%q key=%q proctitle=%q", ev.Sys, ev.Key, ev.Proctitle)
			}
		})
	}
	// A saddr that is not hex leaves Sockaddr out and keeps the record.
	ev := Decode(rawEvent(701, recs(701, TypeSockaddr, "saddr=0200XYZ")))
	if ev.Sockaddr != nil || len(ev.Records) != 1 {
		t.Errorf("bad saddr: sockaddr %+v, %d records", ev.Sockaddr, len(ev.Records))
	}
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fmtSockaddr shows pointer fields by value in failure messages.
func fmtSockaddr(s *Sockaddr) map[string]any {
	m := map[string]any{"family": s.Family, "addr": s.Addr, "path": s.Path, "abstract": s.Abstract, "raw": s.Raw}
	if s.Port != nil {
		m["port"] = *s.Port
	}
	if s.NLPid != nil {
		m["nl_pid"] = *s.NLPid
	}
	if s.Groups != nil {
		m["groups"] = *s.Groups
	}
	return m
}
