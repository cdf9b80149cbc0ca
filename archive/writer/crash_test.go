package writer_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/verify"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/internal/archivetest"
)

// The child writer of the crash test is this test binary, run by TestMain (main_test.go) when
// crashChildEnv is set.
const (
	crashChildEnv  = "AUDITARCH_TEST_CRASH_DIR"    // the archive directory
	crashKeyEnv    = "AUDITARCH_TEST_CRASH_KEY"    // the identity key file
	crashSerialEnv = "AUDITARCH_TEST_CRASH_SERIAL" // the first kernel serial to append
	crashCountEnv  = "AUDITARCH_TEST_CRASH_COUNT"  // append this many events, then Close; 0: until killed
	crashIdleEnv   = "AUDITARCH_TEST_CRASH_IDLE"   // after the events, idle until killed (heartbeat 2 s)
)

// crashOptions flush, checkpoint, re-key and rotate many times a second, so that kills land in each.
func crashOptions(id *archive.Identity) writer.Options {
	return writer.Options{Identity: id, FlushInterval: 15 * time.Millisecond,
		EpochDuration: 200 * time.Millisecond, SegmentDuration: 300 * time.Millisecond, HeartbeatInterval: 250 * time.Millisecond}
}

// crashEvent is an execve event of two records, about 400 bytes.
func crashEvent(serial uint32, now time.Time) *audit.RawEvent {
	sec, msec := now.Unix(), int32(now.Nanosecond()/1e6)
	stamp := fmt.Sprintf("audit(%d.%03d:%d): ", sec, msec, serial)
	sc := fmt.Sprintf("arch=c000003e syscall=59 success=yes exit=0 a0=%x a1=%x a2=%x a3=0 items=1 ppid=%d pid=%d "+
		"auid=1000 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts0 ses=3 comm=\"crash\" "+
		"exe=\"/usr/bin/crash\" key=\"exec\"", serial*7919, serial*104729, serial*2654435761, serial%32768, serial%65536)
	path := fmt.Sprintf("item=0 name=\"/tmp/crash/%08x\" inode=%d dev=fd:01 mode=0100644 ouid=0 ogid=0 rdev=00:00 "+
		"nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0", serial*2246822519, serial)
	return &audit.RawEvent{Kind: audit.KindEvent, Serial: serial, Sec: sec, Msec: msec, Received: now.UnixNano(), EOE: true,
		Records: []audit.Record{{Type: 1300, Text: []byte(stamp + sc)}, {Type: 1302, Text: []byte(stamp + path)}}}
}

// crashChild is the writer the crash test kills. It appends events with consecutive serials from
// crashSerialEnv as fast as a busy host emits them (about 16 000 a second), prints "started" when Create
// returned and "durable N" whenever the durable tree size grows to N. With crashCountEnv it stops after
// that many events, closes the writer and prints "closed"; with crashIdleEnv too it waits to be killed.
func crashChild() int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		return 1
	}
	id, err := archive.LoadIdentity(os.Getenv(crashKeyEnv))
	if err != nil {
		return fail(err)
	}
	serial, err := strconv.ParseUint(os.Getenv(crashSerialEnv), 10, 32)
	if err != nil {
		return fail(err)
	}
	count, _ := strconv.Atoi(os.Getenv(crashCountEnv))
	idle := os.Getenv(crashIdleEnv) != ""
	opts := crashOptions(id)
	if idle {
		opts.HeartbeatInterval = 2 * time.Second
	}
	w, err := writer.Create(os.Getenv(crashChildEnv), opts)
	if err != nil {
		return fail(err)
	}
	var durable uint64
	report := func() {
		if _, _, d := w.Stats(); d != durable {
			durable = d
			fmt.Printf("durable %d\n", d)
		}
	}
	report() // the START leaf
	fmt.Println("started")
	for n := 0; count == 0 || n < count; {
		now := time.Now()
		for j := 0; j < 8 && (count == 0 || n < count); j++ {
			w.Append(crashEvent(uint32(serial), now))
			serial++
			n++
		}
		report()
		time.Sleep(500 * time.Microsecond)
	}
	if idle {
		time.Sleep(time.Hour)
	}
	if err := w.Close(); err != nil {
		return fail(err)
	}
	report()
	fmt.Println("closed")
	return 0
}

// crashRun is what the parent knows about one child writer.
type crashRun struct {
	pid     int
	first   uint32        // serial of its first event
	killAt  time.Duration // after its start; 0: it was let finish
	started bool          // Create returned
	durable uint64        // the largest durable tree size it reported
	closed  bool
}

// runCrashChild starts a child writer on dir and kills it with SIGKILL after killAt, or with killAt 0
// lets it append count events and close.
func runCrashChild(t *testing.T, dir, key string, first uint32, count int, killAt time.Duration) crashRun {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, crashKeyEnv+"="+key,
		crashSerialEnv+"="+strconv.FormatUint(uint64(first), 10), crashCountEnv+"="+strconv.Itoa(count))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	run := crashRun{pid: cmd.Process.Pid, first: first, killAt: killAt}
	if killAt > 0 {
		time.Sleep(killAt)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	err := cmd.Wait()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case killAt > 0 && !(ws.Signaled() && ws.Signal() == syscall.SIGKILL):
		t.Fatalf("child writer ended before the kill: %v\nstderr: %s", err, stderr.Bytes())
	case killAt == 0 && err != nil:
		t.Fatalf("child writer: %v\nstderr: %s", err, stderr.Bytes())
	}
	for _, line := range strings.Split(stdout.String(), "\n") {
		switch f := strings.Fields(line); {
		case len(f) == 1 && f[0] == "started":
			run.started = true
		case len(f) == 1 && f[0] == "closed":
			run.closed = true
		case len(f) == 2 && f[0] == "durable":
			n, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil || n < run.durable {
				t.Fatalf("child output %q: durable size not increasing", line)
			}
			run.durable = n
		}
	}
	return run
}

// crashStats count what the kills hit.
type crashStats struct {
	beforeStart int // kills before the child's START leaf was written
	unsigned    int // kills that left leaves after the last checkpoint
	torn        int // kills that left a torn block
	tears       int // of which the test tore the last block itself
	codes       map[string]int
	recovered   map[string]int // what the STARTs after crashes recorded
}

// leafInfo is the part of a leaf the crash checks look at.
type leafInfo struct {
	kind   archive.LeafKind
	serial uint32
	lost   audit.Lost
	pid    int // START
	rec    *archive.Recovery
}

// readCrashArchive reads every leaf of dir in order, stepping over torn blocks (a crash's) and failing on
// any other damage. Leaf indexes must run from 0 without a gap.
func readCrashArchive(t *testing.T, dir string) (leaves []leafInfo, torn int) {
	t.Helper()
	r, err := archive.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for {
		l, i, err := r.NextLeaf()
		if err == io.EOF {
			return leaves, torn
		}
		var ce *archive.CorruptError
		if errors.As(err, &ce) && ce.Torn {
			torn++
			continue
		}
		if err != nil {
			t.Fatalf("read after leaf %d: %v", len(leaves), err)
		}
		if i != uint64(len(leaves)) {
			t.Fatalf("leaf %d follows leaf %d: leaves %d..%d are missing", i, len(leaves)-1, len(leaves), int64(i)-1)
		}
		li := leafInfo{kind: l.Kind, serial: l.Event.Serial, lost: l.Event.Lost}
		if l.Kind == archive.LeafStart {
			var st archive.Start
			if err := json.Unmarshal(l.Body, &st); err != nil {
				t.Fatalf("START leaf %d: %v", i, err)
			}
			li.pid, li.rec = st.PID, st.Recovered
		}
		leaves = append(leaves, li)
	}
}

// checkCrashArchive checks dir after runs (the last one killed unless clean): the events every run
// appended form, run after run, a gapless sequence of serials (gaps only where a LOST leaf counts them),
// everything a run reported durable is there, and verify.Dir finds nothing but the crashes' tails.
func checkCrashArchive(t *testing.T, dir, pub string, runs []crashRun, clean bool, st *crashStats) *verify.Report {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dir, "seg-*.aseg"))
	if len(segs) == 0 {
		for _, r := range runs {
			if r.started || r.durable > 0 {
				t.Fatalf("no segment, but run %d started", r.pid)
			}
		}
		st.beforeStart++
		return nil
	}
	sort.Strings(segs)
	leaves, torn := readCrashArchive(t, dir)
	L := uint64(len(leaves))

	// Runs in the archive, in order, each with the range of its leaves.
	type runLeaves struct {
		run        *crashRun
		start, end uint64
	}
	var inArchive []runLeaves
	next := 0 // runs[next:] are not yet matched to a START
	lostLocal := uint64(0)
	for i, l := range leaves {
		if i == 0 && l.kind != archive.LeafStart {
			t.Fatalf("leaf 0 is %s, not START", l.kind)
		}
		if l.kind != archive.LeafStart {
			continue
		}
		for next < len(runs) && runs[next].pid != l.pid {
			if runs[next].started || runs[next].durable > 0 {
				t.Fatalf("run %d (pid %d) started, but its START is not in the archive", next, runs[next].pid)
			}
			next++
		}
		if next == len(runs) {
			t.Fatalf("START leaf %d names pid %d, which is no run of this test (or out of order)", i, l.pid)
		}
		if n := len(inArchive); n > 0 {
			inArchive[n-1].end = uint64(i)
			if l.rec == nil {
				t.Fatalf("START leaf %d after a crashed run records no recovery", i)
			}
		}
		inArchive = append(inArchive, runLeaves{run: &runs[next], start: uint64(i), end: L})
		next++
	}
	for ; next < len(runs); next++ {
		if runs[next].started || runs[next].durable > 0 {
			t.Fatalf("run %d (pid %d) started, but its START is not in the archive", next, runs[next].pid)
		}
	}
	if runs[len(runs)-1].killAt > 0 && (len(inArchive) == 0 || inArchive[len(inArchive)-1].run != &runs[len(runs)-1]) {
		st.beforeStart++
	}
	prevSerial := int64(-1)
	for _, ra := range inArchive {
		r := ra.run
		if r.durable > ra.end {
			t.Fatalf("pid %d reported tree size %d durable, but its leaves end at %d: durable leaves were lost", r.pid, r.durable, ra.end)
		}
		if r.durable != 0 && r.durable <= ra.start {
			t.Fatalf("pid %d reported tree size %d durable, its START is leaf %d", r.pid, r.durable, ra.start)
		}
		want := r.first
		for i := ra.start + 1; i < ra.end; i++ {
			l := leaves[i]
			switch l.kind {
			case archive.LeafEvent:
				if l.serial != want {
					t.Fatalf("leaf %d (pid %d) is event %d, want %d: events missing, repeated or out of order", i, r.pid, l.serial, want)
				}
				if int64(l.serial) <= prevSerial {
					t.Fatalf("leaf %d: serial %d after %d", i, l.serial, prevSerial)
				}
				prevSerial = int64(l.serial)
				want++
			case archive.LeafLost:
				if l.lost.Reason != audit.LostLocal || l.lost.Count == 0 {
					t.Fatalf("leaf %d: LOST %+v", i, l.lost)
				}
				want += uint32(l.lost.Count)
				lostLocal += l.lost.Count
			case archive.LeafStart:
				t.Fatalf("leaf %d: START inside a run", i)
			}
		}
		if r.closed && want-r.first != uint32(crashCleanEvents) {
			t.Fatalf("the closing run holds serials %d..%d, want %d events", r.first, want-1, crashCleanEvents)
		}
	}

	v, _, err := archive.LoadVerifierKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := verify.Dir(dir, verify.Options{Key: v})
	if err != nil {
		t.Fatal(err)
	}
	report := func() string {
		js, _ := json.MarshalIndent(struct {
			Status   string
			Problems []verify.Problem
			Runs     []verify.Run
			Unsigned *verify.Tail
			Segments []verify.SegmentReport
		}{rep.Status, rep.Problems, rep.Runs, rep.Unsigned, rep.Segments}, "", "  ")
		return string(js)
	}
	if rep.Live {
		t.Fatalf("verify says a writer holds the archive after the child exited")
	}
	if rep.FirstIndex != 0 || rep.Leaves != L {
		t.Fatalf("verify counts leaves %d..%d, the reader %d: %s", rep.FirstIndex, rep.FirstIndex+rep.Leaves, L, report())
	}
	noStop, tornTail := 0, 0
	for _, p := range rep.Problems {
		st.codes[p.Code]++
		switch {
		case p.Code == "no-stop":
			noStop++
		case p.Code == "torn-tail":
			tornTail++
		case p.Code == "torn-segment":
		case p.Code == "missing-segment" && strings.Contains(p.Message, "crashed right after sealing"):
		default:
			t.Fatalf("verify finds %s/%s: %s\n%s", p.Class, p.Code, p.Message, report())
		}
	}
	// Every killed run is reported (no-stop): at the START that recovered it, or at the archive's end.
	crashed := 0
	for _, r := range rep.Runs {
		if r.Ended == "crashed" {
			crashed++
		}
	}
	if clean {
		want := verify.Pass
		if crashed > 0 {
			want = verify.Incomplete
		}
		if rep.Status != want || len(rep.Problems) != crashed || noStop != crashed || rep.Verified != L || rep.Unsigned != nil {
			t.Fatalf("verify after a clean stop: %s (want %s, %d crashed runs), %d of %d leaves signed\n%s", rep.Status, want, crashed, rep.Verified, L, report())
		}
	} else if rep.Status != verify.Incomplete || noStop != crashed || crashed == 0 {
		t.Fatalf("verify after a kill: %s with %d no-stop, want INCOMPLETE with one per crashed run (%d)\n%s", rep.Status, noStop, crashed, report())
	}
	// Everything is signed but exactly the unsigned tail it reports: the latest valid checkpoint covers
	// the leaves up to the tail.
	signed := uint64(0)
	if lines := strings.SplitN(rep.Latest, "\n", 3); len(lines) == 3 {
		signed, _ = strconv.ParseUint(lines[1], 10, 64)
	}
	if u := rep.Unsigned; u != nil {
		if u.First != signed || u.First+u.Leaves != L || u.Segment != filepath.Base(segs[len(segs)-1]) {
			t.Fatalf("unsigned tail %+v, but the latest checkpoint signs %d of %d leaves and the last segment is %s", *u, signed, L, filepath.Base(segs[len(segs)-1]))
		}
		if (u.Torn > 0) != (tornTail > 0) {
			t.Fatalf("unsigned tail %+v, problems %+v", *u, rep.Problems)
		}
		if u.Leaves > 0 {
			st.unsigned++
		}
		if u.Torn > 0 {
			st.torn++
		}
	} else if signed != L {
		t.Fatalf("the latest checkpoint signs %d of %d leaves, and no unsigned tail is reported\n%s", signed, L, report())
	}
	if len(rep.Runs) != len(inArchive) {
		t.Fatalf("verify finds %d runs, the archive has %d STARTs", len(rep.Runs), len(inArchive))
	}
	for i, run := range rep.Runs {
		want := "crashed"
		if clean && i == len(rep.Runs)-1 {
			want = "stopped"
		}
		if run.Ended != want || run.Start != inArchive[i].start || (i > 0) != (run.Recovered != nil) {
			t.Fatalf("run %d: %+v, want ended %s at START %d\n%s", i, run, want, inArchive[i].start, report())
		}
	}
	lost := uint64(0)
	for _, l := range rep.Lost {
		lost += l.Count
	}
	if lost != lostLocal {
		t.Fatalf("verify reports %d lost events, the LOST leaves count %d", lost, lostLocal)
	}
	if rep.Unsigned != nil && rep.Unsigned.Torn > 0 && torn == 0 {
		t.Fatalf("verify reports the torn tail %+v, the reader meets no torn block", rep.Unsigned)
	}
	return rep
}

// tearLastBlock leaves the newest segment as a write interrupted by the kill (or a power loss) would:
// either it cuts the segment inside its last block, unless that block holds leaves the writer reported
// durable or is the segment's first (a segment is published with its first block durable), or it appends
// the beginning of a block after the last one, unless the segment is sealed (nothing follows a seal).
func tearLastBlock(t *testing.T, dir string, durable uint64, rng *rand.Rand, st *crashStats) {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dir, "seg-*.aseg"))
	if len(segs) == 0 {
		return
	}
	sort.Strings(segs)
	path := segs[len(segs)-1]
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []int // offsets: magic, then blocks of u32 length, u32 CRC-32C, zstd frame
	for off := len("AUDITARCH-SEG-1\n"); off+8 <= len(data); off += 8 + int(binary.LittleEndian.Uint32(data[off:])) {
		blocks = append(blocks, off)
	}
	last := blocks[len(blocks)-1]
	end := last + 8 + int(binary.LittleEndian.Uint32(data[last:]))
	if len(blocks) < 2 || end != len(data) {
		return // a header alone, or already torn
	}
	if len(blocks) >= 3 && rng.IntN(2) == 0 {
		if err := os.Truncate(path, int64(last+1+rng.IntN(end-last-1))); err != nil {
			t.Fatal(err)
		}
		if leaves, _ := readCrashArchive(t, dir); uint64(len(leaves)) < durable {
			if err := os.WriteFile(path, data, 0o600); err != nil { // the block was durable: no tear there
				t.Fatal(err)
			}
			return
		}
	} else {
		if leaves, _ := readCrashArchive(t, dir); leaves[len(leaves)-1].kind == archive.LeafSeal {
			return
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.Write(data[last : last+1+rng.IntN(end-last-1)])
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	st.tears++
}

// crashCleanEvents is what the last, closing, child appends.
const crashCleanEvents = 2000

// TestCrashKill9 kills the writer with SIGKILL at random points under load, over and over in one
// archive: after every kill the archive verifies as INCOMPLETE with exactly its unsigned (and possibly
// torn) tail, never TAMPERED, and holds every event the killed writer had reported durable, with no
// event missing or repeated before it. A last run stops cleanly: the archive then verifies as PASS,
// every crashed run recorded by the START after it. A third of the kills are followed by a torn write
// (tearLastBlock), which a kill alone rarely leaves.
//
// AUDITARCH_TEST_CRASH_KILLS=n makes a longer soak; AUDITARCH_TEST_CRASH_KEEP=dir keeps the archive there.
func TestCrashKill9(t *testing.T) {
	kills := 60
	if n, err := strconv.Atoi(os.Getenv("AUDITARCH_TEST_CRASH_KILLS")); err == nil && n > 0 {
		kills = n
	}
	_, pub := archivetest.Identity(t, "crash.example")
	key := filepath.Join(filepath.Dir(pub), archive.IdentityKeyFile)
	dir := filepath.Join(t.TempDir(), "arch")
	if d := os.Getenv("AUDITARCH_TEST_CRASH_KEEP"); d != "" {
		dir = d
		os.RemoveAll(dir)
	}
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 0))
	t.Logf("seed %d", seed)
	st := &crashStats{codes: map[string]int{}, recovered: map[string]int{}}
	var runs []crashRun
	var durable uint64
	begin := time.Now()
	for k := range kills {
		killAt := 20*time.Millisecond + time.Duration(rng.Int64N(int64(280*time.Millisecond)))
		runs = append(runs, runCrashChild(t, dir, key, uint32(k+1)*10_000_000, 0, killAt))
		durable = max(durable, runs[len(runs)-1].durable) // a tree size: what an earlier run reported holds too
		if rng.IntN(3) == 0 {
			tearLastBlock(t, dir, durable, rng, st)
		}
		checkCrashArchive(t, dir, pub, runs, false, st)
	}
	killed := time.Since(begin)
	runs = append(runs, runCrashChild(t, dir, key, uint32(kills+1)*10_000_000, crashCleanEvents, 0))
	if r := runs[len(runs)-1]; !r.closed {
		t.Fatal("the last child did not close its writer")
	}
	rep := checkCrashArchive(t, dir, pub, runs, true, st)
	if len(rep.Runs) != kills+1-st.beforeStart {
		t.Fatalf("%d runs, want %d: %d kills, %d of them before the START, and the last run", len(rep.Runs), kills+1-st.beforeStart, kills, st.beforeStart)
	}
	leaves, _ := readCrashArchive(t, dir)
	events := 0
	for _, l := range leaves {
		switch l.kind {
		case archive.LeafEvent:
			events++
		case archive.LeafStart:
			if r := l.rec; r != nil {
				switch {
				case r.Sealed:
					st.recovered["sealed"]++
				case r.TornBytes > 0:
					st.recovered["torn"]++
				case r.Unsigned > 0:
					st.recovered["unsigned"]++
				default:
					st.recovered["signed"]++
				}
			}
		}
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "seg-*.aseg"))
	t.Logf("%d kills in %v (total %v): %d before START, %d left an unsigned tail, %d a torn block (%d torn by the test); problems after the kills %v; "+
		"recoveries recorded %v; %d leaves, %d events, %d segments",
		kills, killed.Round(time.Millisecond), time.Since(begin).Round(time.Millisecond), st.beforeStart, st.unsigned, st.torn, st.tears,
		st.codes, st.recovered, len(leaves), events, len(segs))
}

// A kill between a rotation's seal and its successor's first block: the successor, still under its
// temporary name, is not part of the archive. While the writer lives, verify passes; after the kill it
// reports the run's end and a sealed segment whose successor is missing, and the next run records that
// its predecessor ended with a seal and deletes the unpublished successor.
func TestCrashBetweenSealAndSuccessor(t *testing.T) {
	_, pub := archivetest.Identity(t, "crash.example")
	key := filepath.Join(filepath.Dir(pub), archive.IdentityKeyFile)
	v, _, err := archive.LoadVerifierKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "arch")
	unpublished := func() []string {
		tmp, _ := filepath.Glob(filepath.Join(dir, "seg-*.aseg.tmp"))
		return tmp
	}
	// An idle writer rotates every 300 ms and writes the successor's first block only with its
	// heartbeat, 2 s after the seal: kill it in between. Wait for the second rotation, so that the
	// archive also holds a segment whose first block is its seal.
	for try := 1; ; try++ {
		os.RemoveAll(dir)
		var stderr bytes.Buffer
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, crashKeyEnv+"="+key, crashSerialEnv+"=1",
			crashCountEnv+"=100", crashIdleEnv+"=1")
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(3 * time.Second)
		for len(unpublished()) == 0 || len(segmentsOf(t, dir)) < 2 {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("no rotation within 3 s: %s", stderr.Bytes())
			}
			time.Sleep(time.Millisecond)
		}
		live, err := verify.Dir(dir, verify.Options{Key: v})
		if err != nil {
			t.Fatal(err)
		}
		tmp := unpublished()
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if len(tmp) == 0 || len(unpublished()) == 0 {
			if try == 5 {
				t.Fatal("the successor was published before every kill")
			}
			continue // published meanwhile: try again
		}
		if live.Status != verify.Pass || !live.Live || live.Runs[0].Ended != "running" {
			t.Fatalf("live verify between a seal and its successor: %s live=%v %+v %+v", live.Status, live.Live, live.Runs, live.Problems)
		}
		break
	}
	r, err := verify.Dir(dir, verify.Options{Key: v})
	if err != nil {
		t.Fatal(err)
	}
	codes := map[string]string{}
	for _, p := range r.Problems {
		codes[p.Code] = p.Message
	}
	if r.Status != verify.Incomplete || len(codes) != 2 || codes["no-stop"] == "" ||
		!strings.Contains(codes["missing-segment"], "crashed right after sealing") || r.Unsigned != nil || r.Verified != r.Leaves {
		t.Fatalf("verify after the kill: %s, %d of %d leaves signed, tail %+v, problems %+v", r.Status, r.Verified, r.Leaves, r.Unsigned, r.Problems)
	}
	sealed := r.Segments[len(r.Segments)-1]
	if !sealed.Sealed {
		t.Fatalf("the newest segment %+v is not sealed", sealed)
	}

	run := runCrashChild(t, dir, key, 1000, 10, 0)
	if !run.closed {
		t.Fatal("the writer after the kill did not close")
	}
	if tmp, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(tmp) != 0 {
		t.Fatalf("unpublished segments left behind: %v", tmp)
	}
	r, err = verify.Dir(dir, verify.Options{Key: v})
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != verify.Incomplete || len(r.Runs) != 2 || r.Runs[0].Ended != "crashed" || len(r.Problems) != 1 || r.Problems[0].Code != verify.CodeNoStop {
		t.Fatalf("verify after the next run: %s, runs %+v, problems %+v; want INCOMPLETE with the crashed run's no-stop only", r.Status, r.Runs, r.Problems)
	}
	if rec := r.Runs[1].Recovered; rec == nil || !rec.Sealed || rec.Segment != sealed.File || rec.Unsigned != 0 || rec.TornBytes != 0 {
		t.Fatalf("the next START records %+v, want the sealed end of %s", rec, sealed.File)
	}
}

// segmentsOf lists dir's published segments.
func segmentsOf(t *testing.T, dir string) []string {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(dir, "seg-*.aseg"))
	if err != nil {
		t.Fatal(err)
	}
	return segs
}
