package alert

import (
	"fmt"
	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/internal/capfile"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		c.Classify(items[i%len(items)])
	}
	reportRate(b, cpu0)
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
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		c.Classify(items[i%len(items)])
	}
	reportRate(b, cpu0)
}

// workloadItems are the events of testdata/workload.cap (a real capture of the integration test's
// workload: execs, opens, connects, clones, exits, signals) as EVENT leaves.
func workloadItems(b *testing.B) []Item {
	f, err := os.Open("../testdata/workload.cap")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	c, err := capfile.Read(f)
	if err != nil {
		b.Fatal(err)
	}
	var items []Item
	for i, ev := range capfile.Replay(c, 1795324163e9) {
		l := &archive.Leaf{Kind: archive.LeafEvent, Event: *ev}
		l.Time = ev.Sec * 1e9
		items = append(items, Item{Index: uint64(i + 1), Leaf: l})
	}
	return items
}

// BenchmarkClassifyWorkload is BenchmarkClassify on the events of a real capture: routine events,
// mostly ignored at the server level, as a bastion produces them.
func BenchmarkClassifyWorkload(b *testing.B) {
	c := loadBuiltin(b, Server, sigmaRules(b, 150))
	items := workloadItems(b)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		c.Classify(items[i%len(items)])
	}
	reportRate(b, cpu0)
}

// cpuTime is the CPU time this process has used (user and system, every thread: GC included).
func cpuTime() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportRate reports events per second of wall time and per second of CPU time (events/cpu-s: the rate
// on one core, whatever else the machine runs; the classifier runs on one goroutine).
func reportRate(b *testing.B, cpu0 time.Duration) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	if d := cpuTime() - cpu0; d > 0 {
		b.ReportMetric(float64(b.N)/d.Seconds(), "events/cpu-s")
	}
}
