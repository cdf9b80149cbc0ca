package alert

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeRules lays out a rule directory: path (relative) -> content.
func writeRules(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, s := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLogcheckSemantics(t *testing.T) {
	dir := writeRules(t, map[string]string{
		"cracking.d/ssh":                "# comment\n\nsyscall=kill .* target_comm=\"auditarch\"\nevil\n",
		"cracking.d/foo.conf":           "anything\n", // not a run-parts name: skipped
		"cracking.d/bak~":               "anything\n",
		"cracking.ignore.d/ssh":         "evil-but-known\n",
		"cracking.ignore.d/other":       "evil-too\n", // holds back only cracking.d/other
		"cracking.ignore.d/local-site":  "evil-site\n",
		"violations.d/auth":             "res=failed\nevil\n",
		"violations.ignore.d/auth":      "acct=\"guest\"\n",
		"violations.d/logcheck":         "sudo\n",
		"ignore.d.paranoid/base":        "^HEARTBEAT\n",
		"ignore.d.server/base":          "syscall=connect\n",
		"ignore.d.workstation/base":     "syscall=execve\n",
		"ignore.d.server/local-mine":    "syscall=openat\n",
		"ignore.d.server/skipped.local": "syscall=unlink\n",
	})
	for _, tt := range []struct {
		line  string
		level Level
		class Class
		rule  string
	}{
		{`SYSCALL syscall=kill pid=1 target_comm="auditarch" signal=9`, Server, Attack, "cracking.d/ssh"},
		{"X evil", Server, Attack, "cracking.d/ssh"},
		{"X anything", Server, Unusual, ""},                              // foo.conf and bak~ are not read
		{"X evil-but-known", Server, Ignored, "cracking.ignore.d/ssh"},   // held back, and not a violation either
		{"X evil-too", Server, Attack, "cracking.d/ssh"},                 // another file's ignore list does not apply
		{"X evil-site", Server, Ignored, "cracking.ignore.d/local-site"}, // local-* applies to every file
		{"USER_AUTH res=failed", Server, Violation, "violations.d/auth"}, //
		{`USER_AUTH acct="guest" res=failed`, Server, Ignored, "violations.ignore.d/auth"},
		{"USER_CMD sudo", Server, Violation, "violations.d/logcheck"},        // the logcheck file reports what others leave
		{"USER_CMD sudo res=failed", Server, Violation, "violations.d/auth"}, // ...and not what another file reports
		{"HEARTBEAT events=1", Paranoid, Ignored, "ignore.d.paranoid/base"},
		{"SYSCALL syscall=connect", Paranoid, Unusual, ""},
		{"SYSCALL syscall=connect", Server, Ignored, "ignore.d.server/base"},
		{"SYSCALL syscall=openat", Server, Ignored, "ignore.d.server/local-mine"},
		{"SYSCALL syscall=unlink", Workstation, Unusual, ""},
		{"SYSCALL syscall=execve", Server, Unusual, ""},
		{"SYSCALL syscall=execve", Workstation, Ignored, "ignore.d.workstation/base"},
		{"HEARTBEAT events=1", Workstation, Ignored, "ignore.d.paranoid/base"},
	} {
		c, err := Load(dir, tt.level, "")
		if err != nil {
			t.Fatal(err)
		}
		if class, rule := c.ClassifyLine(tt.line); class != tt.class || rule != tt.rule {
			t.Errorf("%q at %s: got %s %q, want %s %q", tt.line, tt.level, class, rule, tt.class, tt.rule)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	dir := writeRules(t, map[string]string{"violations.d/bad": "ok\n# c\n(unclosed\n"})
	_, err := Load(dir, Server, "")
	var pe *PatternError
	if !errors.As(err, &pe) || pe.Line != 3 || !strings.HasSuffix(pe.Path, "violations.d/bad") {
		t.Fatalf("got %v, want a PatternError at violations.d/bad:3", err)
	}
	if !strings.Contains(err.Error(), "violations.d/bad:3: ") {
		t.Errorf("error %q does not name file:line", err)
	}
	long := writeRules(t, map[string]string{"cracking.d/long": strings.Repeat("a", MaxLineLength+1) + "\n"})
	if _, err := Load(long, Server, ""); !errors.As(err, &pe) {
		t.Errorf("a line longer than MaxLineLength: got %v", err)
	}
	big := writeRules(t, map[string]string{"cracking.d/big": strings.Repeat("a\n", MaxRuleFileSize/2+1)})
	if _, err := Load(big, Server, ""); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("a file larger than MaxRuleFileSize: got %v", err)
	}
}

func TestInstallDefaultsKeepsEdits(t *testing.T) {
	dir := t.TempDir()
	wrote, err := InstallDefaults(dir)
	if err != nil || len(wrote) != 7 {
		t.Fatalf("first install: %v %v", wrote, err)
	}
	edited := filepath.Join(dir, "cracking.d", "auditarch")
	if err := os.WriteFile(edited, []byte("mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "ignore.d.server", "auditarch"))
	wrote, err = InstallDefaults(dir)
	if err != nil || len(wrote) != 1 || wrote[0] != "ignore.d.server/auditarch" {
		t.Fatalf("second install wrote %v (%v), want only the removed file", wrote, err)
	}
	if b, _ := os.ReadFile(edited); string(b) != "mine\n" {
		t.Errorf("the administrator's edit was overwritten: %q", b)
	}
}

func TestSigma(t *testing.T) {
	c := loadBuiltin(t, Server, "testdata/sigma")
	if n := len(c.SigmaRules()); n != 3 {
		t.Fatalf("loaded %d Sigma rules, want 3 (the windows rule skipped)", n)
	}
	find := func(name string) Item {
		for _, tc := range builtinCases {
			if tc.name == name {
				return tc.item
			}
		}
		t.Fatalf("no case %q", name)
		return Item{}
	}
	// record level: EXECVE a0|contains, a1|contains (medium: violation; the pattern files agree)
	m := c.Classify(find("chattr"))
	if m.Sigma == nil || m.Sigma.ID != "2f0c6a57-0000-4000-8000-000000000001" || m.Sigma.Author != "auditarch tests" || m.Class != Violation {
		t.Errorf("chattr: got %+v", m)
	}
	// record level: PATH name with a wildcard list (high: attack, above the pattern files' violation)
	m = c.Classify(find("ld.so.preload created"))
	if m.Sigma == nil || !strings.HasPrefix(m.Sigma.Title, "Audit Configuration Touched") || m.Class != Attack || m.Rule != "violations.d/auditarch" {
		t.Errorf("ld.so.preload: got %+v", m)
	}
	audit := eventLeaf(60, syscallRec(257, true, 3, [4]string{"ffffff9c", "55d0", "441", "1b6"}, 1, 0, 1000, "vi", "/usr/bin/vi", "file_write"),
		pathRec(0, "/etc/audit/auditd.conf", "NORMAL"))
	if m = c.Classify(Item{Leaf: audit}); m.Sigma == nil || m.Sigma.ID != "2f0c6a57-0000-4000-8000-000000000002" {
		t.Errorf("/etc/audit/*: got %+v", m)
	}
	// event level: syscall name, exe|endswith, args|contains|all, a filter (low: unusual)
	cat := func(auid uint32, args ...string) Item {
		return Item{Leaf: eventLeaf(61, syscallRec(59, true, 0, [4]string{"1", "2", "3", "0"}, 1, 1000, auid, "cat", "/usr/bin/cat", "exec"),
			execveRec(args...), pathRec(0, "/usr/bin/cat", "NORMAL"))}
	}
	if m = c.Classify(cat(1000, "cat", "/etc/shadow")); m.Sigma == nil || m.Sigma.ID != "2f0c6a57-0000-4000-8000-000000000003" || m.Class != Unusual {
		t.Errorf("cat /etc/shadow: got %+v", m)
	}
	if m = c.Classify(cat(1000, "cat", "/etc/passwd")); m.Sigma != nil {
		t.Errorf("cat /etc/passwd (all: both values needed): got %+v", m.Sigma)
	}
	if m = c.Classify(cat(0, "cat", "/etc/shadow")); m.Sigma != nil {
		t.Errorf("cat by auid 0 (filtered): got %+v", m.Sigma)
	}
}
