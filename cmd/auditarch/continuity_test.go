package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/audit/raw"
	"github.com/auditarch/auditarch/internal/privtest"
	"github.com/auditarch/auditarch/internal/shiptest"
	"github.com/auditarch/auditarch/internal/vmtest"
)

// serialAccount is what an archive says of the kernel's serials.
type serialAccount struct {
	lo, hi   uint32            // the first and last serial archived
	events   int               // distinct serials archived
	inLost   uint64            // serials inside LOST ranges
	byReason map[string]uint64 // LOST counts by reason
	missing  [][2]uint32       // serials neither archived nor in a LOST range
}

// accountSerials reads every event and LOST leaf of dir and checks that each kernel serial from the
// first archived to the last is archived or inside a LOST leaf's range.
func accountSerials(t *testing.T, dir string) serialAccount {
	t.Helper()
	r, err := archive.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	have := map[uint32]bool{}
	var ranges [][2]uint32
	a := serialAccount{byReason: map[string]uint64{}}
	for {
		ev, _, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read archive: %v", err)
		}
		switch {
		case ev.Kind == audit.KindLost:
			a.byReason[ev.Lost.Reason.String()] += ev.Lost.Count
			if ev.Lost.First != 0 {
				ranges = append(ranges, [2]uint32{ev.Lost.First, ev.Lost.Last})
			}
		case ev.Serial != 0:
			have[ev.Serial] = true
			if a.lo == 0 || ev.Serial < a.lo {
				a.lo = ev.Serial
			}
			a.hi = max(a.hi, ev.Serial)
		}
	}
	a.events = len(have)
	sort.Slice(ranges, func(i, j int) bool { return ranges[i][0] < ranges[j][0] })
	for s := a.lo; s != 0 && s <= a.hi; s++ {
		if have[s] {
			continue
		}
		in := false
		for _, rg := range ranges {
			if s >= rg[0] && s <= rg[1] {
				in = true
				break
			}
		}
		if in {
			a.inLost++
			continue
		}
		if n := len(a.missing); n > 0 && a.missing[n-1][1] == s-1 {
			a.missing[n-1][1] = s
		} else {
			a.missing = append(a.missing, [2]uint32{s, s})
		}
	}
	return a
}

// TestKillLoopAccountsForEverySerial kills the daemon with SIGKILL and restarts it at once, 15 times,
// under exec activity, then stops it cleanly: every kernel serial from the first archived to the last is
// archived or inside a LOST leaf (the restarted runs count what no daemon received: no_daemon, and the
// gaps a killed run had no time to report), and verify reports the crashed runs and nothing else.
func TestKillLoopAccountsForEverySerial(t *testing.T) {
	a := killLoop(t, 15)
	if a.byReason["no_daemon"] == 0 {
		t.Errorf("no serials were issued while no daemon was registered: the test did not test (%v)", a.byReason)
	}
}

// TestKillLoopWithHoldQueue is the same loop on a kernel booted with audit=1 audit_backlog_limit=8192
// (in a VM), where the kernel holds what it issues while no daemon is registered: every serial is still
// accounted for. (What a killed daemon had received and not yet archived, in its socket or its memory, is
// lost with it whatever the kernel holds: those serials are its successor's no_daemon LOST.)
func TestKillLoopWithHoldQueue(t *testing.T) {
	if !vmtest.InVM() {
		vmtest.RunTest(t, "TestKillLoopWithHoldQueue", vmtest.Options{Cmdline: "audit=1 audit_backlog_limit=8192", Timeout: 8 * time.Minute})
		return
	}
	// (The guest has none of the files the built-in rules watch: exec and process rules only.)
	killLoop(t, 15, "--rules", execRules(t))
}

// execRules writes a rule file that audits execs and process exits only.
func execRules(t *testing.T) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "exec.rules")
	if err := os.WriteFile(f, []byte("-D\n-b 8192\n-a always,exit -F arch=b64 -S execve,execveat -k exec\n-a always,exit -F arch=b64 -S exit_group -k proc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// downtime kills an idle daemon, runs n execs with a marker while no daemon is registered, restarts the
// daemon, stops it, and returns how many of the marked execs the archive holds and its LOST leaves.
func downtime(t *testing.T, n int) (held int, lost map[string]uint64) {
	t.Helper()
	ctl := privtest.Kernel(t)
	rules := execRules(t)
	dir, keys := filepath.Join(t.TempDir(), "archive"), filepath.Join(t.TempDir(), "keys")
	cmd, _ := daemonProcess(t, ctl, dir, keys, "--rules", rules)
	time.Sleep(time.Second) // idle: nothing in its socket or its memory when it dies
	cmd.Process.Kill()
	cmd.Wait()
	marker := fmt.Sprintf("downtime-%d", os.Getpid())
	for range n {
		c := exec.Command(os.Args[0], marker)
		c.Env = append(os.Environ(), trueEnv+"=1")
		if err := c.Run(); err != nil {
			t.Fatal(err)
		}
	}
	cmd, stderr := daemonProcess(t, ctl, dir, keys, "--rules", rules)
	time.Sleep(7 * time.Second) // past the gap grace
	cmd.Process.Signal(unix.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("daemon: %v\n%s", err, stderr)
	}
	evs, _ := readArchive(t, dir)
	lost = map[string]uint64{}
	for _, ev := range evs {
		switch {
		case ev.Type == "LOST":
			lost[ev.LostReason] += *ev.LostCount
		case ev.Sys == "execve" && len(ev.Args) == 2 && ev.Args[1] == marker:
			held++
		}
	}
	t.Logf("%d of %d execs run with no daemon registered are archived; LOST %v", held, n, lost)
	return held, lost
}

// TestDowntimeCountedAsNoDaemon: on a kernel booted without audit=1, what happens while no daemon is
// registered is printed to the kernel's log and dropped, uncounted; the next run finds the serials it
// skipped and records them as a no_daemon LOST.
func TestDowntimeCountedAsNoDaemon(t *testing.T) {
	if holdQueue() {
		privtest.Unavailable(t, "this kernel was booted with audit=1: it holds records while no daemon is registered")
	}
	const n = 50
	held, lost := downtime(t, n)
	if held != 0 || lost["no_daemon"] < 2*n { // each exec is two events: execve and exit_group
		t.Errorf("%d marked execs archived, LOST %v; want none archived and at least %d no_daemon", held, lost, 2*n)
	}
}

// TestDowntimeHeldByKernel: booted with audit=1 audit_backlog_limit=8192 (in a VM), the kernel holds
// what happens while no daemon is registered and the next run archives all of it. Only the few records
// the kernel had already handed to the killed daemon's socket when it died are gone (in a LOST leaf).
func TestDowntimeHeldByKernel(t *testing.T) {
	if !vmtest.InVM() {
		vmtest.RunTest(t, "TestDowntimeHeldByKernel", vmtest.Options{Cmdline: "audit=1 audit_backlog_limit=8192", Timeout: 5 * time.Minute})
		return
	}
	if !holdQueue() {
		t.Fatal("the guest kernel was not booted with audit=1")
	}
	const n = 50
	held, lost := downtime(t, n)
	if held != n || len(lost) > 1 || lost["no_daemon"] > 8 {
		t.Errorf("%d of %d marked execs archived, LOST %v; want all, and at most the killed socket's few records lost", held, n, lost)
	}
}

// killLoop runs the daemon (with the extra run arguments) on a new archive, kills it with SIGKILL and
// restarts it at once kills times under exec activity, stops it cleanly, checks every serial is accounted
// for and verify reports only the crashed runs, and returns the account.
func killLoop(t *testing.T, kills int, extra ...string) serialAccount {
	t.Helper()
	ctl := privtest.Kernel(t)
	dir, keys := filepath.Join(t.TempDir(), "archive"), filepath.Join(t.TempDir(), "keys")
	// The activity: execs of /bin/true, or where there is none (the VM) of this binary, which exits at once.
	trueCmd := func() *exec.Cmd { return exec.Command("/bin/true", "continuity") }
	if _, err := os.Stat("/bin/true"); err != nil {
		trueCmd = func() *exec.Cmd {
			c := exec.Command(os.Args[0], "continuity")
			c.Env = append(os.Environ(), trueEnv+"=1")
			return c
		}
	}
	var stop atomic.Bool
	var execs atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if trueCmd().Run() == nil {
					execs.Add(1)
				}
			}
		}()
	}
	defer func() { stop.Store(true); wg.Wait() }()

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for i := range kills {
		cmd, _ := daemonProcess(t, ctl, dir, keys, extra...)
		time.Sleep(time.Duration(150+rng.IntN(400)) * time.Millisecond)
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		t.Logf("kill %d: %d execs so far", i+1, execs.Load())
	}
	cmd, stderr := daemonProcess(t, ctl, dir, keys, extra...)
	time.Sleep(time.Second)
	stop.Store(true)
	wg.Wait()
	time.Sleep(200 * time.Millisecond)
	if err := cmd.Process.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the last run: %v\n%s", err, stderr)
	}

	a := accountSerials(t, dir)
	t.Logf("serials %d..%d: %d archived, %d in LOST leaves %v; %d execs run", a.lo, a.hi, a.events, a.inLost, a.byReason, execs.Load())
	if len(a.missing) > 0 {
		t.Errorf("%d ranges of serials neither archived nor in a LOST leaf: %v", len(a.missing), a.missing[:min(len(a.missing), 20)])
	}
	if a.events < int(execs.Load()) {
		t.Errorf("%d serials archived, fewer than the %d execs run", a.events, execs.Load())
	}
	r := verifyKeys(t, dir, keys)
	shiptest.OnlyCrashes(t, dir, r)
	if len(r.Runs) != kills+1 {
		t.Errorf("%d runs, want %d", len(r.Runs), kills+1)
	}
	return a
}

// trueEnv makes the test binary exit 0 at once (an exec target where there is no /bin/true).
const trueEnv = "AUDITARCH_TEST_TRUE"

// opensEnv makes the test binary open files in a loop: "DIR DURATION". It opens DIR/start, then
// DIR/marker as often as it can for DURATION, then DIR/end, pausing between, and prints the count.
const opensEnv = "AUDITARCH_TEST_OPENS"

func opens(spec string) int {
	dir, dur, _ := strings.Cut(spec, " ")
	d, err := time.ParseDuration(dur)
	if err != nil {
		fmt.Fprintln(os.Stderr, "opens:", err)
		return 2
	}
	open := func(name string) bool {
		fd, err := unix.Open(filepath.Join(dir, name), unix.O_RDONLY, 0)
		if err != nil {
			return false
		}
		unix.Close(fd)
		return true
	}
	open("start")
	time.Sleep(300 * time.Millisecond)
	n := 0
	for end := time.Now().Add(d); time.Now().Before(end); {
		for range 100 {
			if open("marker") {
				n++
			}
		}
	}
	time.Sleep(300 * time.Millisecond)
	open("end")
	fmt.Println(n)
	return 0
}

// overloadAccount is what TestOverload* found: the operations run, and what the archive and the kernel
// say of them.
type overloadAccount struct {
	ops, whole, partial, inGap, lostWhole, foreign int
	missing                                        int    // records the partial events miss
	kernelLost, keptLost                           uint64 // the kernel's lost counter's rise; what LOST leaves count
}

// TestOverloadAccounts overloads the kernel (backlog 64, no waiting) and stops the daemon for 2 s in the
// middle of an open loop: the LOST leaves' record counts equal the kernel's lost counter, every serial is
// archived or in a LOST leaf, and the operations run are accounted for as far as the kernel's counts
// allow. The kernel counts one lost record for an event it drops whole (audit_log_exit gives up when its
// SYSCALL record cannot be queued, before the event takes a serial) and one for each record a partial
// event misses; but it also counts records of other processes lost meanwhile (a few), and, booted
// without audit=1, it drops uncounted (printed to its log) records it could not deliver to a daemon
// whose socket stayed full (kauditd_hold_skb). So: whole + partial + serial gaps <= operations <=
// whole + partial + serial gaps + lost records, and the operations lost whole are logged against the
// lost records minus those the partial events miss (measured: within 1 of 362,900 on this host).
func TestOverloadAccounts(t *testing.T) {
	a := overload(t)
	low, high := a.whole+a.partial+a.inGap-a.foreign, a.whole+a.partial+a.inGap+int(a.kernelLost)-a.foreign
	if a.ops < low || a.ops > high {
		t.Errorf("%d opens run; the archive and the kernel's count account for %d..%d", a.ops, low, high)
	}
	t.Logf("opens lost whole: %d; lost records minus the partial events' missing ones: %d", a.ops-low, a.lostWhole)
}

// TestOverloadWithHoldQueue is the overload on a kernel booted with audit=1 (in a VM), which counts every
// record it drops: the LOST leaves equal its lost counter, every serial is accounted for, and what the
// archive accounts for is the operations run to within the kernel's count. (Measured there: to within 2
// of about 11,000 opens, the kernel counting 2 lost records more than the loop's events miss.)
func TestOverloadWithHoldQueue(t *testing.T) {
	if !vmtest.InVM() {
		vmtest.RunTest(t, "TestOverloadWithHoldQueue", vmtest.Options{Cmdline: "audit=1 audit_backlog_limit=8192", Timeout: 5 * time.Minute})
		return
	}
	a := overload(t)
	if high := a.whole + a.partial + a.inGap + int(a.kernelLost) - a.foreign; a.ops > high {
		t.Errorf("%d opens run; the archive and the kernel's count account for at most %d", a.ops, high)
	}
}

// overload runs the overloaded open loop under the daemon and accounts for it.
func overload(t *testing.T) overloadAccount {
	t.Helper()
	ctl := privtest.Kernel(t)
	work := t.TempDir()
	for _, f := range []string{"start", "marker", "end"} {
		if err := os.WriteFile(filepath.Join(work, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rulesFile := filepath.Join(t.TempDir(), "overload.rules")
	rules := fmt.Sprintf("-D\n-b 64\n--backlog_wait_time 0\n"+
		"-a always,exit -F arch=b64 -S openat -F path=%[1]s/start -F key=start\n"+
		"-a always,exit -F arch=b64 -S openat -F path=%[1]s/marker -F key=overload\n"+
		"-a always,exit -F arch=b64 -S openat -F path=%[1]s/end -F key=end\n", work)
	if err := os.WriteFile(rulesFile, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	dir, keys := filepath.Join(t.TempDir(), "archive"), filepath.Join(t.TempDir(), "keys")
	cmd, stderr := daemonProcess(t, ctl, dir, keys, "--rules", rulesFile)
	before, err := ctl.GetStatus()
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command(os.Args[0])
	child.Env = append(os.Environ(), opensEnv+"="+work+" 4s")
	var out bytes.Buffer
	child.Stdout, child.Stderr = &out, os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1300 * time.Millisecond)
	cmd.Process.Signal(unix.SIGSTOP)
	time.Sleep(2 * time.Second)
	cmd.Process.Signal(unix.SIGCONT)
	if err := child.Wait(); err != nil {
		t.Fatal(err)
	}
	var ops int
	if _, err := fmt.Sscan(out.String(), &ops); err != nil || ops == 0 {
		t.Fatalf("the open loop printed %q", out.String())
	}
	time.Sleep(7 * time.Second) // past the gap grace: the gaps are reported while the daemon runs
	after, err := ctl.GetStatus()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(unix.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("daemon: %v\n%s", err, stderr)
	}

	r, err := archive.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var lo, hi uint32
	whole, partial, others := map[uint32]bool{}, map[uint32]bool{}, map[uint32]bool{}
	perOp := 0                  // records of a whole event, with its EOE
	records := map[uint32]int{} // records of each serial, late ones and the EOE included
	var gaps [][2]uint32
	var keptLostRecords, lostWhileRunning uint64
	for {
		ev, _, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev.Kind == audit.KindLost {
			switch ev.Lost.Reason {
			case raw.LostKernel:
				keptLostRecords += ev.Lost.Count
			case raw.LostGap:
				gaps = append(gaps, [2]uint32{ev.Lost.First, ev.Lost.Last})
			case raw.LostSocket:
				// The socket overran, but kauditd requeued what it could not deliver: no serial is missing.
			default:
				t.Errorf("LOST %s: %d", ev.Lost.Reason, ev.Lost.Count)
			}
			continue
		}
		d := audit.Decode(ev)
		records[ev.Serial] += len(ev.Records)
		if ev.EOE && !(len(ev.Records) == 1 && ev.Records[0].Type == audit.TypeEOE) {
			records[ev.Serial]++ // (an EOE that arrived alone is in Records)
		}
		switch {
		case d.Key == "start":
			lo = ev.Serial
		case d.Key == "end":
			hi = ev.Serial
		case ev.Late:
		case ev.Partial():
			partial[ev.Serial] = true
		case d.Key == "overload":
			whole[ev.Serial] = true
			perOp = max(perOp, len(ev.Records)+1) // (all alike: SYSCALL, CWD, PATH, PROCTITLE and the EOE)
		default:
			others[ev.Serial] = true
		}
	}
	lostWhileRunning = uint64(after.Lost - before.Lost)
	if lo == 0 || hi == 0 {
		t.Fatalf("the start or end sentinel was not archived (%d, %d)", lo, hi)
	}
	inGap, silent, foreign := 0, 0, 0
	for s := lo + 1; s < hi; s++ {
		if others[s] {
			foreign++
		}
		if whole[s] || partial[s] || others[s] {
			continue
		}
		found := false
		for _, g := range gaps {
			if s >= g[0] && s <= g[1] {
				found = true
				break
			}
		}
		if found {
			inGap++
		} else if !whole[s] {
			silent++
		}
	}
	missing := 0 // records the partial events miss (an EOE that came late, after the timeout, is not missing)
	for s := range partial {
		missing += perOp - records[s]
	}
	lostWhole := int(lostWhileRunning) - missing
	a := overloadAccount{ops: ops, whole: len(whole), partial: len(partial), inGap: inGap, lostWhole: lostWhole, foreign: foreign,
		missing: missing, kernelLost: lostWhileRunning, keptLost: keptLostRecords}
	t.Logf("%d opens: %d archived whole (%d records each), %d partial (missing %d records), %d in serial-gap LOST leaves, %d lost whole, %d other events, %d silently missing; kernel lost %d records, LOST leaves count %d",
		ops, len(whole), perOp, len(partial), missing, inGap, lostWhole, foreign, silent, lostWhileRunning, keptLostRecords)
	if silent != 0 {
		t.Errorf("%d serials between the sentinels are neither archived nor in a LOST leaf", silent)
	}
	if keptLostRecords != lostWhileRunning || lostWhileRunning == 0 {
		t.Errorf("LOST leaves count %d lost records, the kernel's counter rose by %d (want equal, and the overload to lose some)", keptLostRecords, lostWhileRunning)
	}
	return a
}
