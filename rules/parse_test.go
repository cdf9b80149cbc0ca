package rules

import (
	"bytes"
	"errors"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/elastic/go-libaudit/v2/auparse"
)

var update = flag.Bool("update", false, "rewrite testdata/default.golden from Default().Format")

func mustParse(t testing.TB, text string) *Set {
	t.Helper()
	s, err := Parse(strings.NewReader(text), "test.rules")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestParseGood(t *testing.T) {
	type op struct {
		kind  OpKind
		text  string
		value uint32
	}
	for _, tc := range []struct {
		line string
		want []op
	}{
		{"-D", []op{{DeleteAll, "-D", 0}}},
		{"-b 8192", []op{{BacklogLimit, "-b 8192", 8192}}},
		{"-f 2", []op{{FailureMode, "-f 2", 2}}},
		{"-f 0", []op{{FailureMode, "-f 0", 0}}},
		{"-r 100", []op{{RateLimit, "-r 100", 100}}},
		{"--backlog_wait_time 60000", []op{{BacklogWaitTime, "--backlog_wait_time 60000", 60000}}},
		{"--backlog_wait_time=0", []op{{BacklogWaitTime, "--backlog_wait_time 0", 0}}},
		{"-e 1", []op{{Enabled, "-e 1", 1}}},
		{"-e 0", []op{{Enabled, "-e 0", 0}}},
		{"-b 320 -f 1", []op{{BacklogLimit, "-b 320", 320}, {FailureMode, "-f 1", 1}}},
		{"   # a comment", nil},
		{"", nil},
		{"-c", nil},
		{"-i", nil},
		{"-a always,exit -F arch=b64 -S kill -k signal",
			[]op{{AddRule, "-a always,exit -F arch=b64 -S kill -F key=signal", 0}}},
		{"-a exit,always -F arch=b32 -S socketcall -F a0=3 -k net",
			[]op{{AddRule, "-a always,exit -F arch=b32 -S socketcall -F a0=3 -F key=net", 0}}},
		{"-a always,exit -F arch=b64 -S openat -F a2&0100 -F auid>=1000 -F auid!=unset -k w",
			[]op{{AddRule, "-a always,exit -F arch=b64 -S openat -F a2&64 -F auid>=1000 -F auid!=-1 -F key=w", 0}}},
		{"-A exit,never -F pid=1", []op{{AddRule, "-A never,exit -S all -F pid=1", 0}}},
		{"-d always,exit -F arch=b64 -S kill -k signal",
			[]op{{DeleteRule, "-d always,exit -F arch=b64 -S kill -F key=signal", 0}}},
		{"-w /etc/shadow -p wa -k identity", []op{{AddRule, "-w /etc/shadow -p wa -k identity", 0}}},
		{"-W /etc/shadow -p wa -k identity", []op{{DeleteRule, "-W /etc/shadow -p wa -k identity", 0}}},
		{"\t-w /etc/passwd -p w   ", []op{{AddRule, "-w /etc/passwd -p w", 0}}},
	} {
		s, err := Parse(strings.NewReader(tc.line), "rules.conf")
		if err != nil {
			t.Errorf("%q: %v", tc.line, err)
			continue
		}
		var got []op
		for _, o := range s.Ops {
			if o.Line != 1 {
				t.Errorf("%q: line %d, want 1", tc.line, o.Line)
			}
			got = append(got, op{o.Kind, o.Text, o.Value})
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q:\n got %v\nwant %v", tc.line, got, tc.want)
		}
	}
}

func TestParseSwitches(t *testing.T) {
	s := mustParse(t, "-b 1\n-c\n")
	if !s.Continue || s.IgnoreErrors {
		t.Errorf("-c: Continue %v IgnoreErrors %v", s.Continue, s.IgnoreErrors)
	}
	s = mustParse(t, "-i\n-b 1\n")
	if s.Continue || !s.IgnoreErrors {
		t.Errorf("-i: Continue %v IgnoreErrors %v", s.Continue, s.IgnoreErrors)
	}
}

// TestParseWire checks that -A, -d and -a build the same rule, -A marked to go first.
func TestParseWire(t *testing.T) {
	s := mustParse(t, `-a always,exit -F arch=b64 -S kill -k k
-A always,exit -F arch=b64 -S kill -k k
-d always,exit -F arch=b64 -S kill -k k
-w /etc/shadow -p r
-W /etc/shadow -p r
`)
	a, p, d := s.Ops[0].Wire, s.Ops[1].Wire, s.Ops[2].Wire
	if isPrepend(a) || !isPrepend(p) || isPrepend(d) {
		t.Errorf("prepend flags: -a %v -A %v -d %v", isPrepend(a), isPrepend(p), isPrepend(d))
	}
	if !bytes.Equal(a, d) || !sameRule(a, p) || listOf(p) != filterExit {
		t.Error("-a, -A and -d of the same rule differ beyond the prepend flag")
	}
	if !bytes.Equal(s.Ops[3].Wire, s.Ops[4].Wire) {
		t.Error("-w and -W of the same watch differ")
	}
}

func TestParseBad(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{"-a always,exit -S nosuch", "unknown syscall 'nosuch'"},
		{"-a always,exit -F arch=b32 -S accept", "unknown syscall 'accept' for arch i386"},
		{"-a always,exit -F arch=b64 -S setuid32", "unknown syscall 'setuid32' for arch x86_64"},
		{"-a always,exit -S open -x", "flag provided but not defined: -x"},
		{"-a bogus,exit -S open", "invalid list type or action"},
		{"-a always,exit -F nosuchfield=1", "invalid field 'nosuchfield'"},
		{"-w relative/path -p r", "path must be absolute"},
		{"-w /etc/shadow -S open", "mutually exclusive"},
		{"-f 3", "-f: invalid value \"3\" (0 to 2)"},
		{"-e 5", "-e: invalid value"},
		{"-b", "-b needs a value"},
		{"-b x", "-b: invalid value \"x\""},
		{"-b -1", "-b: invalid value"},
		{"-r 4294967296", "-r: invalid value"},
		{"--backlog_wait_time 2147483648", "--backlog_wait_time: invalid value"},
		{"-b=5", "unknown or unsupported option \"-b=5\""},
		{"-l", "unknown or unsupported option \"-l\""},
		{"-s", "unknown or unsupported option"},
		{"-D -k key", "-D takes no other options"},
		{`-w /etc/a\ b -p r`, "quotes and backslashes are not supported"},
		{`-a always,exit -S kill -k "k"`, "quotes and backslashes are not supported"},
		{"--loginuid-immutable", "--loginuid-immutable is not supported"},
		{"--reset-lost", "--reset-lost is not supported"},
	} {
		text := "# header\n\n" + tc.line + "\n-b 1\n"
		_, err := Parse(strings.NewReader(text), "rules.conf")
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Errorf("%q: got %v, want a *ParseError", tc.line, err)
			continue
		}
		if pe.File != "rules.conf" || pe.Line != 3 || pe.Text != tc.line {
			t.Errorf("%q: ParseError{%q, %d, %q}", tc.line, pe.File, pe.Line, pe.Text)
		}
		prefix := "rules.conf:3: " + tc.line + ": "
		if msg := err.Error(); !strings.HasPrefix(msg, prefix) || !strings.Contains(msg, tc.want) {
			t.Errorf("%q: error %q, want %q...%q", tc.line, msg, prefix, tc.want)
		}
		if r := []rune(pe.Err.Error())[0]; unicode.IsUpper(r) {
			t.Errorf("%q: capitalised error %q", tc.line, pe.Err)
		}
	}
}

func TestParseNothingAfterLock(t *testing.T) {
	_, err := Parse(strings.NewReader("-b 1\n-e 2\n# fine\n-b 2\n"), "x.rules")
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Line != 4 || !strings.Contains(err.Error(), "nothing may follow -e 2") {
		t.Fatalf("got %v", err)
	}
	if s := mustParse(t, "-b 1\n-e 2\n\n# the end\n"); !s.Locks() {
		t.Error("a set ending with -e 2 does not lock")
	}
	if s := mustParse(t, "-e 1\n"); s.Locks() {
		t.Error("-e 1 locks")
	}
}

func TestParseFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.rules")
	if err := os.WriteFile(path, []byte("-D\n-b 64\n-a always,exit -S nosuch\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := ParseFile(path)
	if want := path + ":3: -a always,exit -S nosuch: "; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("got %v, want prefix %q", err, want)
	}
	if _, err := ParseFile(path + ".missing"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

// Coverage of the default set, per DESIGN.md "Capture": for each key, the syscalls each ABI must audit.
var defaultCoverage = []struct {
	key      string
	filter   string // the rule's filters between -S and -k, as printed
	b64, b32 []string
}{
	{key: "exec", b64: []string{"execve", "execveat"}, b32: []string{"execve", "execveat"}},
	{key: "proc", b64: []string{"fork", "vfork", "clone", "clone3", "exit", "exit_group"},
		b32: []string{"fork", "vfork", "clone", "clone3", "exit", "exit_group"}},
	{key: "net", b64: []string{"connect", "accept", "accept4"}, b32: []string{"connect", "accept4"}},
	{key: "net", filter: "-F a0=3", b32: []string{"socketcall"}},  // SYS_CONNECT
	{key: "net", filter: "-F a0=5", b32: []string{"socketcall"}},  // SYS_ACCEPT
	{key: "net", filter: "-F a0=18", b32: []string{"socketcall"}}, // SYS_ACCEPT4
	{key: "acct", b64: []string{"acct"}, b32: []string{"acct"}},
	{key: "delete", b64: []string{"unlink", "unlinkat", "rename", "renameat", "renameat2", "rmdir"},
		b32: []string{"unlink", "unlinkat", "rename", "renameat", "renameat2", "rmdir"}},
	{key: "file_write", filter: "-F a1&3", b64: []string{"open"}, b32: []string{"open"}},  // O_WRONLY|O_RDWR
	{key: "file_write", filter: "-F a1&64", b64: []string{"open"}, b32: []string{"open"}}, // O_CREAT
	{key: "file_write", filter: "-F a2&3", b64: []string{"openat"}, b32: []string{"openat"}},
	{key: "file_write", filter: "-F a2&64", b64: []string{"openat"}, b32: []string{"openat"}},
	{key: "file_write", b64: []string{"creat", "openat2"}, b32: []string{"creat", "openat2"}},
	{key: "time", b64: []string{"utime", "utimes", "utimensat", "futimesat"},
		b32: []string{"utime", "utimes", "utimensat", "futimesat", "utimensat_time64"}},
	{key: "signal", b64: []string{"kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_send_signal"},
		b32: []string{"kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_send_signal"}},
	{key: "ptrace", b64: []string{"ptrace"}, b32: []string{"ptrace"}},
	{key: "module", b64: []string{"init_module", "finit_module", "delete_module"},
		b32: []string{"init_module", "finit_module", "delete_module"}},
	{key: "mount", b64: []string{"mount", "umount2", "move_mount", "mount_setattr"},
		b32: []string{"mount", "umount", "umount2", "move_mount", "mount_setattr"}},
	{key: "identity",
		b64: []string{"setuid", "setreuid", "setresuid", "setfsuid", "setgid", "setregid", "setresgid", "setfsgid", "setgroups"},
		b32: []string{"setuid", "setreuid", "setresuid", "setfsuid", "setgid", "setregid", "setresgid", "setfsgid", "setgroups",
			"setuid32", "setreuid32", "setresuid32", "setfsuid32", "setgid32", "setregid32", "setresgid32", "setfsgid32", "setgroups32"}},
	{key: "bpf", b64: []string{"bpf"}, b32: []string{"bpf"}},
}

var defaultWatches = []string{
	"-w /etc/shadow -p r -k sensitive_read",
	"-w /etc/gshadow -p r -k sensitive_read",
	"-w /etc/sudoers -p r -k sensitive_read",
	"-w /etc/sudoers.d -p r -k sensitive_read",
	"-w /etc/ssh -p r -k sensitive_read",
}

// TestDefault checks the embedded set parses and, reading each rule back from its wire format,
// audits every syscall of DESIGN.md for both ABIs.
func TestDefault(t *testing.T) {
	s := Default()
	if s.Locks() {
		t.Error("the default set locks (-e 2)")
	}
	var head []string
	for _, op := range s.Ops[:4] {
		head = append(head, op.Text)
	}
	if want := []string{"-D", "-b 8192", "-f 1", "--backlog_wait_time 60000"}; !slices.Equal(head, want) {
		t.Errorf("starts with %q, want %q", head, want)
	}
	// syscalls[arch+" "+filters+" "+key] = the syscalls of matching rules, decoded from the wire.
	syscalls := map[string][]string{}
	var watches []string
	for _, op := range s.Ops {
		switch op.Kind {
		case AddRule:
		case Enabled:
			t.Errorf("line %d: the default set sets %s", op.Line, op.Text)
			continue
		default:
			continue
		}
		text, err := commandLine(op.Wire)
		if err != nil {
			t.Fatalf("line %d: %v", op.Line, err)
		}
		if strings.HasPrefix(text, "-w ") {
			watches = append(watches, text)
			continue
		}
		// -a always,exit -F arch=bNN -S a,b,c [-F filter...] -F key=K
		f := strings.Fields(text)
		if len(f) < 7 || f[1] != "always,exit" || f[4] != "-S" || f[len(f)-1] == "" || !strings.HasPrefix(f[len(f)-1], "key=") {
			t.Errorf("line %d: unexpected rule %q", op.Line, text)
			continue
		}
		id := f[3] + "|" + strings.Join(f[6:len(f)-2], " ") + "|" + strings.TrimPrefix(f[len(f)-1], "key=")
		syscalls[id] = append(syscalls[id], strings.Split(f[5], ",")...)
	}
	tables := map[string]map[int]string{"arch=b64": auparse.AuditSyscalls["x86_64"], "arch=b32": auparse.AuditSyscalls["i386"]}
	for _, c := range defaultCoverage {
		for arch, names := range map[string][]string{"arch=b64": c.b64, "arch=b32": c.b32} {
			for _, name := range names {
				if !slices.Contains(slices.Collect(maps.Values(tables[arch])), name) {
					t.Errorf("%s: %s is not in go-libaudit's table", arch, name)
				}
				found := false
				for id, list := range syscalls {
					a, filters, key := splitID(id)
					if a == arch && key == c.key && filters == c.filter {
						found = found || slices.Contains(list, name)
					}
				}
				if !found {
					t.Errorf("%s %s -k %s: %s is not audited", arch, c.filter, c.key, name)
				}
			}
		}
	}
	if !slices.Equal(watches, defaultWatches) {
		t.Errorf("watches:\n got %q\nwant %q", watches, defaultWatches)
	}
}

func splitID(id string) (arch, filters, key string) {
	f := strings.Split(id, "|")
	return f[0], f[1], f[2]
}

func TestDefaultGolden(t *testing.T) {
	var b bytes.Buffer
	if err := Default().Format(&b); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "default.golden")
	if *update {
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run TestDefaultGolden -update)", err)
	}
	if got := b.String(); got != string(want) {
		t.Errorf("Default().Format differs from %s (run with -update to accept):\n%s", golden, got)
	}
}

func TestFormatEffective(t *testing.T) {
	s := mustParse(t, `-b 100
-a always,exit -F arch=b64 -S kill -k old
-D
-f 2
-a always,exit -F arch=b64 -S kill -k k1
-w /etc/shadow -p r -k w
-a always,exit -F arch=b64 -S ptrace -k k2
-A always,exit -F arch=b64 -S bpf -k first
-a never,user -F uid=0
-d always,exit -F arch=b64 -S kill -k k1
-b 200
--backlog_wait_time 10
-r 5
-e 0
-e 1
`)
	var b bytes.Buffer
	if err := s.Format(&b); err != nil {
		t.Fatal(err)
	}
	want := `-D
-b 200
-f 2
-r 5
--backlog_wait_time 10
-a never,user -F uid=0
-a always,exit -F arch=b64 -S bpf -F key=first
-w /etc/shadow -p r -k w
-a always,exit -F arch=b64 -S ptrace -F key=k2
-e 1
`
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
	// The output is itself a rule file with the same effect.
	again, err := Parse(&b, "formatted")
	if err != nil {
		t.Fatal(err)
	}
	r1, _ := s.Rules()
	r2, _ := again.Rules()
	if !slices.Equal(r1, r2) {
		t.Errorf("rules after a round trip:\n got %q\nwant %q", r2, r1)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(defaultRules)
	f.Add("-A never,exit -F pid=1\n-d always,exit -S kill\n-W /etc/shadow -p r\n-e 2\n")
	f.Add("-b 1 -f 2 -r 3 --backlog_wait_time=4 -c -i")
	f.Fuzz(func(t *testing.T, text string) {
		s, err := Parse(strings.NewReader(text), "fuzz")
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) && !strings.HasPrefix(err.Error(), "read fuzz: ") {
				t.Fatalf("error %v is not a *ParseError", err)
			}
			return
		}
		var b bytes.Buffer
		if err := s.Format(&b); err != nil {
			t.Fatalf("Format of a parsed set: %v", err)
		}
		// Format writes a rule file with the same rules.
		again, err := Parse(&b, "formatted")
		if err != nil {
			t.Fatalf("Format wrote an unparsable file: %v", err)
		}
		r1, _ := s.Rules()
		r2, _ := again.Rules()
		if !slices.Equal(r1, r2) {
			t.Fatalf("rules after a round trip:\n got %q\nwant %q", r2, r1)
		}
	})
}
