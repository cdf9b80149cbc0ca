package alert

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSigmaPrefilterDecodes: the needle prefilter sees what sigma-go sees. An argument the kernel
// hex-encoded (it holds a space), and one split over a1[0], a1[1] with the needle across the split,
// both still reach the rule; a record without the needle does not match.
func TestSigmaPrefilterDecodes(t *testing.T) {
	dir := t.TempDir()
	rule := `title: Secret Argument
id: 2f0c6a57-0000-4000-8000-0000000000aa
author: auditarch tests
logsource:
    product: linux
    service: auditd
detection:
    selection:
        type: EXECVE
        a1|contains: 'secret arg'
    condition: selection
level: high
`
	if err := os.WriteFile(filepath.Join(dir, "r.yml"), []byte(rule), 0o644); err != nil {
		t.Fatal(err)
	}
	c := loadBuiltin(t, Server, dir)
	h := strings.ToUpper(hex.EncodeToString([]byte("a Secret Arg here")))
	exec := func(execve string) Item {
		return Item{Leaf: eventLeaf(70, syscallRec(59, true, 0, [4]string{"1", "2", "3", "0"}, 1, 1000, 1000, "tool", "/usr/bin/tool", "exec"),
			rec{1309, execve}, pathRec(0, "/usr/bin/tool", "NORMAL"))}
	}
	for _, tc := range []struct {
		name, execve string
		match        bool
	}{
		{"hex", `argc=2 a0="tool" a1=` + h, true},
		{"split", `argc=2 a0="tool" a1_len=34 a1[0]=` + h[:10] + ` a1[1]=` + h[10:], true},
		{"quoted", `argc=2 a0="tool" a1="secret-arg"`, false},
	} {
		m := c.Classify(exec(tc.execve))
		if got := m.Sigma != nil && m.Sigma.ID == "2f0c6a57-0000-4000-8000-0000000000aa"; got != tc.match {
			t.Errorf("%s: matched %v, want %v (%+v)", tc.name, got, tc.match, m)
		}
	}
}
