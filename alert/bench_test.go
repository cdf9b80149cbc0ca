package alert

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// sigmaRules writes n rules in SigmaHQ's auditd form, spread over the record types SigmaHQ's rules use
// (EXECVE arguments, PATH names, SYSCALL exe and comm, user records), none matching the events below.
func sigmaRules(tb testing.TB, n int) string {
	dir := tb.TempDir()
	for i := 0; i < n; i++ {
		var sel string
		switch i % 4 {
		case 0:
			sel = fmt.Sprintf("        type: EXECVE\n        a0|contains: tool%d\n        a1|contains: '--opt%d'\n", i, i)
		case 1:
			sel = fmt.Sprintf("        type: PATH\n        name|endswith: '/secret%d'\n", i)
		case 2:
			sel = fmt.Sprintf("        type: SYSCALL\n        exe|endswith: '/bin%d'\n        comm: c%d\n", i, i)
		case 3:
			sel = fmt.Sprintf("        type:\n            - USER_CMD\n            - USER_AUTH\n        acct: user%d\n", i)
		}
		rule := fmt.Sprintf("title: bench %d\nid: 00000000-0000-4000-8000-%012d\nauthor: bench\nlogsource:\n    product: linux\n    service: auditd\ndetection:\n    selection:\n%s    condition: selection\nlevel: medium\n", i, i, sel)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("r%03d.yml", i)), []byte(rule), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

// BenchmarkClassify classifies the built-in cases (every kind of event the rules name, and routine
// ones) with the built-in rule set and 150 Sigma rules, at the server level, on one goroutine.
func BenchmarkClassify(b *testing.B) {
	c := loadBuiltin(b, Server, sigmaRules(b, 150))
	items := make([]Item, len(builtinCases))
	for i, tc := range builtinCases {
		items[i] = tc.item
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.Classify(items[i%len(items)])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkClassifyPatterns is the pattern files alone (no Sigma rules).
func BenchmarkClassifyPatterns(b *testing.B) {
	c := loadBuiltin(b, Server, "")
	items := make([]Item, len(builtinCases))
	for i, tc := range builtinCases {
		items[i] = tc.item
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.Classify(items[i%len(items)])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
