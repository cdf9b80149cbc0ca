package alert

import (
	"regexp/syntax"
	"slices"
	"testing"
)

// TestDispatchMatchesEveryPattern: trying only the patterns filed under a line's head gives the same
// answer as trying every pattern, for every built-in file and case and for lines made to sit at the
// edges of the heads (a longer syscall name, a kind that is a prefix of another, no syscall name).
func TestDispatchMatchesEveryPattern(t *testing.T) {
	c := loadBuiltin(t, Workstation, "")
	lines := []string{"SYSCALL syscall=killx a0=1", "SYSCALL", "SYSCALL success=true", "USER_AUTHX res=failed",
		"POLICY", "POLICY action=signal", "LOST reason=kernel", "CONFIG_CHANGE op=remove_rule key=\"x\"", "", "ALARM source=daemon kind=store_key msg=\"\""}
	for _, tc := range builtinCases {
		lines = append(lines, c.Classify(tc.item).Line)
	}
	dirs := append([]*ruleDir{c.cracking, c.crackingIgnore, c.violations, c.violationsIgnore}, c.ignore...)
	for _, d := range dirs {
		for _, f := range d.files {
			for _, line := range lines {
				all := slices.ContainsFunc(f.patterns, func(p pattern) bool { return p.re.MatchString(line) })
				if got := f.match(line); got != all {
					t.Errorf("%s on %q: dispatched %v, every pattern %v", f.path, line, got, all)
				}
			}
		}
	}
}

func TestHeadKeys(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`^SYSCALL syscall=(kill|tkill|tgkill) .*x`, []string{"SYSCALL syscall=kill", "SYSCALL syscall=tgkill", "SYSCALL syscall=tkill"}},
		{`^SYSCALL syscall=(setuid|setgid)(32)? `, []string{"SYSCALL syscall=setgid", "SYSCALL syscall=setgid32", "SYSCALL syscall=setuid", "SYSCALL syscall=setuid32"}},
		{`^SYSCALL syscall=set.* `, []string{"SYSCALL"}},
		{`^SYSCALL .* exe="/tmp/`, []string{"SYSCALL"}},
		{`^(USER_AUTH|LOGIN) .*res=failed`, []string{"LOGIN", "USER_AUTH"}},
		{`^POLICY `, []string{"POLICY"}},
		{`^POLICY`, nil},
		{`^USER_.* res=failed`, nil},
		{`syscall=kill `, nil},
		{`(?i)^policy `, nil},
	} {
		re, err := syntax.Parse(tc.expr, syntax.Perl)
		if err != nil {
			t.Fatal(err)
		}
		if got := headKeys(re); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.expr, got, tc.want)
		}
	}
}
