package main

import (
	"errors"
	"io"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/verify"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/internal/privtest"
	"github.com/auditarch/auditarch/internal/shiptest"
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
// archived or inside a LOST leaf (the restarted runs count what no daemon received: no_daemon), and verify
// reports the crashed runs and nothing else.
func TestKillLoopAccountsForEverySerial(t *testing.T) {
	ctl := privtest.Kernel(t)
	dir, keys := filepath.Join(t.TempDir(), "archive"), filepath.Join(t.TempDir(), "keys")
	var stop atomic.Bool
	var execs atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if exec.Command("/bin/true", "continuity").Run() == nil {
					execs.Add(1)
				}
			}
		}()
	}
	defer func() { stop.Store(true); wg.Wait() }()

	const kills = 15
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for i := range kills {
		cmd, _ := daemonProcess(t, ctl, dir, keys)
		time.Sleep(time.Duration(150+rng.IntN(400)) * time.Millisecond)
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		t.Logf("kill %d: %d execs so far", i+1, execs.Load())
	}
	cmd, stderr := daemonProcess(t, ctl, dir, keys)
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
	pub, _, err := archive.LoadVerifierKey(filepath.Join(keys, archive.IdentityPubFile))
	if err != nil {
		t.Fatal(err)
	}
	r, err := verify.Dir(dir, verify.Options{Key: pub})
	if err != nil {
		t.Fatal(err)
	}
	shiptest.OnlyCrashes(t, dir, r)
	if len(r.Runs) != kills+1 {
		t.Errorf("%d runs, want %d", len(r.Runs), kills+1)
	}
}
