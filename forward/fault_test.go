package forward_test

// Fault tests: the store killed, the network cut, the daemon killed, the store's disk full, each under a
// load of about 2,000 events a second. Each ends the same way (checkNothingLost): the store's copy is the
// host's archive byte for byte, with the same leaves, every event appended is in it exactly once, and
// both verify PASS under the pinned host key.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/receipt"
	"github.com/auditarch/auditarch/archive/verify"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/forward"
	"github.com/auditarch/auditarch/internal/archivetest"
	"github.com/auditarch/auditarch/internal/privtest"
	"github.com/auditarch/auditarch/internal/shiptest"
	"github.com/auditarch/auditarch/store"
)

// The store and the host of these tests can run as child processes: this test binary, re-executed with
// -test.run naming TestHelperStoreProcess or TestHelperHostProcess and these variables set.
const (
	storeDirEnv   = "AUDITARCH_TEST_STORE_DIR"   // the store directory; unset: TestHelperStoreProcess returns
	storeAddrEnv  = "AUDITARCH_TEST_STORE_ADDR"  // host:port to listen on
	storeGraceEnv = "AUDITARCH_TEST_STORE_GRACE" // store.Config.Grace (a time.Duration); default the store's

	hostDirEnv      = "AUDITARCH_TEST_HOST_DIR"       // the archive directory; unset: TestHelperHostProcess returns
	hostKeyEnv      = "AUDITARCH_TEST_HOST_KEY"       // the identity key file
	hostStoreEnv    = "AUDITARCH_TEST_HOST_STORE"     // the store's address
	hostStorePubEnv = "AUDITARCH_TEST_HOST_STORE_PUB" // the store's store.pub
	hostSerialEnv   = "AUDITARCH_TEST_HOST_SERIAL"    // the first kernel serial to append
	hostCountEnv    = "AUDITARCH_TEST_HOST_COUNT"     // append this many events, close, wait until shipped; 0: until killed
)

// Load: eventsPerTick every loadTick, about 2,000 events a second.
const (
	loadTick      = 10 * time.Millisecond
	eventsPerTick = 20
)

// appendLoad appends events with consecutive serials from first to w at about 2,000 a second until stop
// is closed (or, with count > 0, count events were appended), calling tick, if set, after each tick's
// events. It returns the serial after the last one appended.
func appendLoad(w *writer.Writer, first uint32, count int, stop <-chan struct{}, tick func()) uint32 {
	t := time.NewTicker(loadTick)
	defer t.Stop()
	next := first
	for {
		for range eventsPerTick {
			if count > 0 && int(next-first) >= count {
				return next
			}
			w.Append(event(next))
			next++
		}
		if tick != nil {
			tick()
		}
		select {
		case <-stop:
			return next
		case <-t.C:
		}
	}
}

// load is appendLoad on its own goroutine.
type load struct {
	first uint32
	stop  chan struct{}
	done  chan uint32
	ended bool
	next  uint32
}

func startLoad(t *testing.T, w *writer.Writer, first uint32) *load {
	l := &load{first: first, stop: make(chan struct{}), done: make(chan uint32, 1)}
	go func() { l.done <- appendLoad(w, first, 0, l.stop, nil) }()
	t.Cleanup(func() { l.end() })
	return l
}

// end stops the load and returns the serials appended, first..last.
func (l *load) end() (first, last uint32) {
	if !l.ended {
		close(l.stop)
		l.next, l.ended = <-l.done, true
	}
	return l.first, l.next - 1
}

// waitFor polls cond every 20 ms until it holds, and fails the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stopOnCleanup stops h's shipper and closes its writer when the test ends, should it end early.
func stopOnCleanup(t *testing.T, h *host) {
	t.Cleanup(func() {
		h.cancel()
		<-h.done
		h.w.Close()
	})
}

// waitCaughtUp waits until the store has acknowledged everything durable on h now and returns how long
// that took.
func waitCaughtUp(t *testing.T, h *host, timeout time.Duration) time.Duration {
	t.Helper()
	begin := time.Now()
	pos := h.w.Durable()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := h.sh.WaitShipped(ctx, pos); err != nil {
		t.Fatalf("the shipper did not catch up with %s:%d within %s: %v (status %+v)", pos.Segment, pos.Offset, timeout, err, h.sh.Status())
	}
	return time.Since(begin)
}

// serialRange is the events appended with serials first..last.
type serialRange struct{ first, last uint32 }

// archiveEvents reads the archive in dir: how often each event serial occurs, the events among the
// first n leaves (all leaves when n is 0), and the LOST leaves.
func archiveEvents(t *testing.T, dir string, n uint64) (count map[uint32]int, prefix []uint32, lost []archive.Leaf) {
	t.Helper()
	r, err := archive.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	count = map[uint32]int{}
	for {
		l, i, err := r.NextLeaf()
		if errors.Is(err, io.EOF) {
			return count, prefix, lost
		}
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		switch l.Kind {
		case archive.LeafEvent:
			count[l.Event.Serial]++
			if n == 0 || i < n {
				prefix = append(prefix, l.Event.Serial)
			}
		case archive.LeafLost:
			lost = append(lost, *l)
		}
	}
}

// checkNothingLost checks the store's copy of the archive in hostDir: the same segment files byte for
// byte and the same leaves; every serial of want exactly once, no other event and no LOST leaf; both
// verify PASS under the host key pub; and the store made its sealed segments immutable. It returns the
// host's report.
func checkNothingLost(t *testing.T, hostDir, storeDir, pub string, want ...serialRange) *verify.Report {
	t.Helper()
	shiptest.SameFiles(t, hostDir, storeDir)
	hl, sl := shiptest.Leaves(t, hostDir), shiptest.Leaves(t, storeDir)
	if !slices.Equal(hl, sl) {
		t.Fatalf("leaf lists differ: host %d leaves, store %d", len(hl), len(sl))
	}
	count, _, lost := archiveEvents(t, storeDir, 0)
	if len(lost) > 0 {
		t.Fatalf("the store's copy has %d LOST leaves, the first %+v", len(lost), lost[0].Event.Lost)
	}
	events := 0
	for _, r := range want {
		for s := r.first; s <= r.last; s++ {
			if c := count[s]; c != 1 {
				t.Fatalf("event %d is %d times in the store's copy, want once (appended %d..%d)", s, c, r.first, r.last)
			}
		}
		events += int(r.last - r.first + 1)
	}
	if len(count) != events {
		t.Fatalf("the store's copy holds %d distinct events, %d were appended", len(count), events)
	}
	vk, _, err := archive.LoadVerifierKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	var reports [2]*verify.Report
	for i, dir := range []string{hostDir, storeDir} {
		r, err := verify.Dir(dir, verify.Options{Key: vk})
		if err != nil {
			t.Fatalf("verify %s: %v", dir, err)
		}
		shiptest.OnlyCrashes(t, dir, r)
		reports[i] = r
	}
	if reports[0].Leaves != reports[1].Leaves || reports[0].Latest != reports[1].Latest {
		t.Fatalf("host verifies %d leaves to %q, store %d to %q", reports[0].Leaves, reports[0].Latest, reports[1].Leaves, reports[1].Latest)
	}
	checkSealed(t, storeDir, reports[1])
	t.Logf("nothing lost: %d events in %d leaves, %d segments, byte for byte on both sides, both PASS",
		events, reports[0].Leaves, len(reports[0].Segments))
	return reports[0]
}

// checkSealed checks, as root, that every sealed segment of the store's area dir (verified as r) is
// immutable: the store sealed them across the fault too.
func checkSealed(t *testing.T, dir string, r *verify.Report) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	var mutable []string
	for _, sr := range r.Segments {
		if !sr.Sealed {
			continue
		}
		imm, err := store.IsImmutable(filepath.Join(dir, sr.File))
		if err != nil {
			return // the filesystem has no such flag
		}
		if !imm {
			mutable = append(mutable, sr.File)
		}
	}
	if len(mutable) > 0 {
		t.Errorf("sealed segments the store did not make immutable: %v", mutable)
	}
}

// checkReceipts checks that a receipts file reads without error and holds only good receipts, at least
// one.
func checkReceipts(t *testing.T, path string, key *receipt.CosignVerifier) []receipt.Receipt {
	t.Helper()
	rs, bad, err := receipt.Read(path, key)
	if err != nil || bad != 0 || len(rs) == 0 {
		t.Fatalf("receipts %s: %d good, %d bad, %v", path, len(rs), bad, err)
	}
	return rs
}

// logTail logs the end of a child's log file when the test failed.
func logTail(t *testing.T, what, path string) {
	if !t.Failed() {
		return
	}
	b, _ := os.ReadFile(path)
	if len(b) > 8<<10 {
		b = b[len(b)-8<<10:]
	}
	t.Logf("%s log (%s), its end:\n%s", what, path, b)
}

// TestHelperStoreProcess is the store of the tests that kill it or cut it off: store.Open and Serve until
// killed. It does nothing unless storeDirEnv is set.
func TestHelperStoreProcess(t *testing.T) {
	dir := os.Getenv(storeDirEnv)
	if dir == "" {
		return
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "store process:", err)
		os.Exit(2)
	}
	grace, _ := time.ParseDuration(os.Getenv(storeGraceEnv))
	srv, err := store.Open(store.Config{Dir: dir, Grace: grace, Log: zerolog.New(os.Stderr).With().Timestamp().Logger()})
	if err != nil {
		fail(err)
	}
	// The address of a killed predecessor may take a moment to be free.
	var ln net.Listener
	for i := 0; ; i++ {
		if ln, err = net.Listen("tcp", os.Getenv(storeAddrEnv)); err == nil || i == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		fail(err)
	}
	fmt.Printf("listening %s\n", ln.Addr())
	fail(fmt.Errorf("serve returned: %v", srv.Serve(context.Background(), ln)))
}

// storeProc is a store running as a child process (TestHelperStoreProcess).
type storeProc struct {
	t      *testing.T
	dir    string
	addr   string   // its address: the port is the one the first start got
	prefix []string // the command that runs the test binary, e.g. ip netns exec NAME
	grace  time.Duration
	key    *receipt.CosignVerifier
	log    *os.File // its stderr, over restarts
	cmd    *exec.Cmd
	exited chan struct{}
}

// newStoreProc prepares a store directory with the hosts of hostPubs enrolled. start runs it; it is
// killed when the test ends.
func newStoreProc(t *testing.T, prefix []string, grace time.Duration, hostPubs ...string) *storeProc {
	t.Helper()
	p := &storeProc{t: t, dir: filepath.Join(t.TempDir(), "store"), prefix: prefix, grace: grace}
	for _, pub := range hostPubs {
		vkey, err := os.ReadFile(pub)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.Enroll(p.dir, string(vkey)); err != nil {
			t.Fatal(err)
		}
	}
	logPath := filepath.Join(t.TempDir(), "store.log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.log = f
	t.Cleanup(func() {
		p.kill()
		f.Close()
		store.ClearImmutable(p.dir)
		logTail(t, "store", logPath)
	})
	return p
}

// start starts the store on addr (its previous address when empty) and waits until it listens.
func (p *storeProc) start(addr string) {
	p.t.Helper()
	if addr == "" {
		addr = p.addr
	}
	args := append(slices.Clone(p.prefix), os.Args[0], "-test.run=^TestHelperStoreProcess$")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), storeDirEnv+"="+p.dir, storeAddrEnv+"="+addr, storeGraceEnv+"="+p.grace.String())
	cmd.Stderr = p.log
	r, w, err := os.Pipe()
	if err != nil {
		p.t.Fatal(err)
	}
	cmd.Stdout = w
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		p.t.Fatal(err)
	}
	p.cmd, p.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) {
		cmd.Wait()
		close(exited)
	}(p.exited)
	listening := make(chan string, 1)
	go func() {
		defer r.Close()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
				listening <- a
			}
		}
	}()
	select {
	case p.addr = <-listening:
	case <-p.exited:
		p.t.Fatalf("the store process exited: %v", cmd.ProcessState)
	case <-time.After(20 * time.Second):
		p.t.Fatal("the store process does not listen after 20 s")
	}
	if p.key == nil {
		if p.key, err = receipt.LoadCosignVerifier(filepath.Join(p.dir, store.PubFile)); err != nil {
			p.t.Fatal(err)
		}
	}
}

// kill kills the store with SIGKILL, by its pid, and waits for it (no-op when it is not running).
func (p *storeProc) kill() {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(unix.SIGKILL)
	<-p.exited
	if !killed(p.cmd.ProcessState) {
		p.t.Errorf("the store process ended before it was killed: %v", p.cmd.ProcessState)
	}
	p.cmd = nil
}

// killed reports whether a child process was ended by a signal.
func killed(ps *os.ProcessState) bool {
	ws, ok := ps.Sys().(interface{ Signaled() bool })
	return ok && ws.Signaled()
}

// store describes the store for host.start.
func (p *storeProc) store() *shiptest.Store {
	return &shiptest.Store{Dir: p.dir, Addr: p.addr, Key: p.key}
}

func (p *storeProc) hostDir(origin string) string {
	return store.AreaDir(p.dir, origin)
}

// TestStoreKilledUnderLoad kills the store (SIGKILL) while the host ships under load and restarts it on
// the same address 1.5 s later: the shipper reconnects, resumes from the store's STATE, catches up, and
// nothing is lost or sent twice. The store's area verifies, and its receipts file is intact.
func TestStoreKilledUnderLoad(t *testing.T) {
	const origin = "host-kill.example"
	h := newHost(t, origin)
	sp := newStoreProc(t, nil, 0, h.pub)
	sp.start("127.0.0.1:0")
	h.start(sp.store(), fastOptions(h.id), forward.Config{})
	stopOnCleanup(t, h)
	ld := startLoad(t, h.w, 1)
	waitFor(t, 10*time.Second, "the store acknowledges", func() bool { return h.sh.Status().Size > 0 })
	time.Sleep(time.Second)
	before := h.sh.Status()
	sp.kill()
	down := time.Now()
	time.Sleep(1500 * time.Millisecond)
	sp.start("")
	restarted := time.Since(down)
	catchUp := waitCaughtUp(t, h, 15*time.Second)
	time.Sleep(500 * time.Millisecond) // and it keeps up
	first, last := ld.end()
	h.stop(15 * time.Second)
	after := h.sh.Status()
	sp.kill()
	t.Logf("store killed at %s:%d (%d leaves acknowledged), back after %s; caught up %s later; at the end %s:%d, %d leaves; last error %q",
		before.Segment, before.Offset, before.Size, restarted.Round(time.Millisecond), catchUp.Round(time.Millisecond),
		after.Segment, after.Offset, after.Size, after.LastError)

	checkNothingLost(t, h.dir, sp.hostDir(origin), h.pub, serialRange{first, last})
	rs := checkReceipts(t, filepath.Join(sp.hostDir(origin), store.ReceiptsFile), sp.key)
	checkReceipts(t, filepath.Join(h.dir, "receipts"), sp.key)
	newest, _ := receipt.Newest(rs)
	if newest.Checkpoint.Size != after.Size {
		t.Errorf("the store's newest receipt covers %d leaves, it holds %d", newest.Checkpoint.Size, after.Size)
	}
}

// netCut is a network namespace holding one end of a veth pair: a link that the test can cut.
type netCut struct {
	t                *testing.T
	ns, link         string // the namespace, and the veth end outside it
	hostIP, storeIP  string
	blackhole        string // the route that drops what would leave the host's way while the link is down
	cutAt, restoreAt time.Time
}

// ip runs ip with args and fails the test on an error.
func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// newNetCut makes a namespace and a veth pair, 10.213.y.z/30 (from this process's pid), and removes them
// when the test ends. While the link is down, a blackhole route of low priority drops the host's packets
// to the store: without it they would take the default route out of the machine.
func newNetCut(t *testing.T) *netCut {
	t.Helper()
	privtest.Command(t, "ip")
	pid := os.Getpid()
	y, z := pid%256, pid/256%64*4
	n := &netCut{t: t, ns: fmt.Sprintf("aafault%d", pid), link: fmt.Sprintf("aafA%d", pid),
		hostIP: fmt.Sprintf("10.213.%d.%d", y, z+1), storeIP: fmt.Sprintf("10.213.%d.%d", y, z+2),
		blackhole: fmt.Sprintf("10.213.%d.%d/30", y, z)}
	peer := fmt.Sprintf("aafB%d", pid)
	t.Cleanup(func() {
		for _, args := range [][]string{{"netns", "del", n.ns}, {"link", "del", n.link}, {"route", "del", "blackhole", n.blackhole, "metric", "4000"}} {
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil && !bytes.Contains(out, []byte("No such")) &&
				!bytes.Contains(out, []byte("Cannot find")) && !bytes.Contains(out, []byte("not find")) {
				t.Logf("cleanup: ip %s: %v: %s", strings.Join(args, " "), err, out)
			}
		}
	})
	if out, err := exec.Command("ip", "netns", "add", n.ns).CombinedOutput(); err != nil {
		privtest.Unavailable(t, "ip netns add: %v: %s", err, out)
	}
	ip(t, "link", "add", n.link, "type", "veth", "peer", "name", peer)
	ip(t, "link", "set", peer, "netns", n.ns)
	ip(t, "route", "add", "blackhole", n.blackhole, "metric", "4000")
	ip(t, "addr", "add", n.hostIP+"/30", "dev", n.link)
	ip(t, "link", "set", n.link, "up")
	ip(t, "netns", "exec", n.ns, "ip", "addr", "add", n.storeIP+"/30", "dev", peer)
	ip(t, "netns", "exec", n.ns, "ip", "link", "set", peer, "up")
	ip(t, "netns", "exec", n.ns, "ip", "link", "set", "lo", "up")
	return n
}

func (n *netCut) cut() {
	n.t.Helper()
	ip(n.t, "link", "set", n.link, "down")
	n.cutAt = time.Now()
}

func (n *netCut) restore() {
	n.t.Helper()
	ip(n.t, "link", "set", n.link, "up")
	n.restoreAt = time.Now()
}

// readAlarms reads a store's alarms.log.
func readAlarms(t *testing.T, path string) []store.Alarm {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []store.Alarm
	for _, line := range bytes.Split(b, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var a store.Alarm
		if err := json.Unmarshal(line, &a); err != nil {
			t.Fatalf("%s: %q: %v", path, line, err)
		}
		out = append(out, a)
	}
	return out
}

// TestNetworkCut30s cuts the link between the host and the store (in its own network namespace) for
// 30 s under load: packets are silently lost. The shipper's backlog grows, the shipper gives up on the
// connection that gets no acknowledgements and retries, the store raises a silence alarm; once the link
// is back the shipper catches up within seconds, and nothing is lost or sent twice.
func TestNetworkCut30s(t *testing.T) {
	privtest.Root(t)
	const origin = "host-cut.example"
	n := newNetCut(t)
	h := newHost(t, origin)
	sp := newStoreProc(t, []string{"ip", "netns", "exec", n.ns}, time.Second, h.pub)
	sp.start(net.JoinHostPort(n.storeIP, "0"))
	h.start(sp.store(), fastOptions(h.id), forward.Config{})
	stopOnCleanup(t, h)
	ld := startLoad(t, h.w, 1)
	waitFor(t, 10*time.Second, "the store acknowledges", func() bool { return h.sh.Status().Size > 0 })
	time.Sleep(time.Second)

	n.cut()
	var early, late, most int64
	disconnected := time.Duration(0)
	for time.Since(n.cutAt) < 30*time.Second {
		time.Sleep(250 * time.Millisecond)
		st := h.sh.Status()
		most = max(most, st.Backlog)
		switch d := time.Since(n.cutAt); {
		case d < 5*time.Second:
			early = st.Backlog
		case d > 25*time.Second:
			late = st.Backlog
		}
		if !st.Connected && disconnected == 0 {
			disconnected = time.Since(n.cutAt)
		}
	}
	lastErr := h.sh.Status().LastError
	n.restore()
	catchUp := waitCaughtUp(t, h, 20*time.Second)
	t.Logf("link down for %s: backlog %d bytes after 5 s, %d after 25 s (at most %d); the shipper dropped the connection after %s (%s); caught up %s after the link came back",
		n.restoreAt.Sub(n.cutAt).Round(time.Millisecond), early, late, most, disconnected.Round(time.Millisecond), lastErr, catchUp.Round(time.Millisecond))
	if early <= 0 || late <= early {
		t.Errorf("the backlog does not grow during the cut: %d bytes after 5 s, %d after 25 s", early, late)
	}
	// AckTimeout (default 10 s) ends the connection; the shipper checks at least every second.
	if disconnected == 0 || disconnected > 12*time.Second {
		t.Errorf("the shipper dropped the connection that acknowledged nothing %s after the cut, want within 10 s and a tick", disconnected)
	}
	if catchUp > 10*time.Second {
		t.Errorf("catching up took %s", catchUp)
	}
	time.Sleep(500 * time.Millisecond)
	first, last := ld.end()
	h.stop(15 * time.Second)
	sp.kill()

	alarms := readAlarms(t, filepath.Join(sp.dir, store.AlarmsFile))
	i := slices.IndexFunc(alarms, func(a store.Alarm) bool {
		return a.Kind == "silence" && a.Host == origin && !a.Time.Before(n.cutAt) && !a.Time.After(n.restoreAt)
	})
	if i < 0 {
		t.Errorf("the store raised no silence alarm for %s during the cut (%s..%s): %+v", origin, n.cutAt, n.restoreAt, alarms)
	} else {
		t.Logf("silence alarm %s after the cut: %s", alarms[i].Time.Sub(n.cutAt).Round(time.Millisecond), alarms[i].Message)
	}
	checkNothingLost(t, h.dir, sp.hostDir(origin), h.pub, serialRange{first, last})
	checkReceipts(t, filepath.Join(sp.hostDir(origin), store.ReceiptsFile), sp.key)
}

// TestHelperHostProcess is the daemon of TestDaemonKilledAndRestarted: a writer and a shipper. It appends
// events as appendLoad does from hostSerialEnv, printing "durable N" whenever the durable tree size grows
// to N. With hostCountEnv it stops after that many events, closes the writer, waits until the store has
// everything and prints "shipped". It does nothing unless hostDirEnv is set.
func TestHelperHostProcess(t *testing.T) {
	dir := os.Getenv(hostDirEnv)
	if dir == "" {
		return
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "host process:", err)
		os.Exit(2)
	}
	id, err := archive.LoadIdentity(os.Getenv(hostKeyEnv))
	if err != nil {
		fail(err)
	}
	key, err := receipt.LoadCosignVerifier(os.Getenv(hostStorePubEnv))
	if err != nil {
		fail(err)
	}
	first, err := strconv.ParseUint(os.Getenv(hostSerialEnv), 10, 32)
	if err != nil {
		fail(err)
	}
	count, _ := strconv.Atoi(os.Getenv(hostCountEnv))
	log := zerolog.New(os.Stderr).With().Timestamp().Logger()
	w, err := writer.Create(dir, fastOptions(id))
	if err != nil {
		fail(err)
	}
	sh, err := forward.New(forward.Config{Addr: os.Getenv(hostStoreEnv), StoreKey: key, Identity: id, Dir: dir, Writer: w,
		MaxBackoff: 200 * time.Millisecond, Log: log})
	if err != nil {
		fail(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	shipped := make(chan struct{})
	go func() {
		sh.Run(ctx)
		close(shipped)
	}()
	var durable uint64
	report := func() {
		if _, _, d := w.Stats(); d != durable {
			durable = d
			fmt.Printf("durable %d\n", d)
		}
	}
	report()
	appendLoad(w, uint32(first), max(count, 0), nil, report)
	if count == 0 {
		time.Sleep(time.Hour) // until killed
	}
	if err := w.Close(); err != nil {
		fail(err)
	}
	report()
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	err = sh.WaitShipped(wctx, w.Durable())
	wcancel()
	cancel()
	<-shipped
	if err != nil {
		fail(err)
	}
	fmt.Println("shipped")
	os.Exit(0)
}

// hostProc is a daemon running as a child process (TestHelperHostProcess).
type hostProc struct {
	cmd     *exec.Cmd
	exited  chan struct{}
	mu      sync.Mutex
	durable uint64 // the largest durable tree size it reported
	shipped bool
}

// startHostProc starts a daemon on the archive dir (identity key file key) shipping to st, appending
// count events from serial first (count 0: until killed). It is killed when the test ends.
func startHostProc(t *testing.T, dir, key string, st *shiptest.Store, first uint32, count int) *hostProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHostProcess$")
	cmd.Env = append(os.Environ(), hostDirEnv+"="+dir, hostKeyEnv+"="+key, hostStoreEnv+"="+st.Addr,
		hostStorePubEnv+"="+filepath.Join(st.Dir, store.PubFile), hostSerialEnv+"="+strconv.FormatUint(uint64(first), 10),
		hostCountEnv+"="+strconv.Itoa(count))
	logPath := filepath.Join(t.TempDir(), "host.log")
	lf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = lf
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = w
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	p := &hostProc{cmd: cmd, exited: make(chan struct{})}
	read := make(chan struct{})
	go func() {
		defer close(read)
		defer r.Close()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			p.mu.Lock()
			switch {
			case len(f) == 2 && f[0] == "durable":
				if d, err := strconv.ParseUint(f[1], 10, 64); err == nil && d > p.durable {
					p.durable = d
				}
			case len(f) == 1 && f[0] == "shipped":
				p.shipped = true
			}
			p.mu.Unlock()
		}
	}()
	go func() {
		cmd.Wait()
		<-read
		close(p.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(unix.SIGKILL)
		<-p.exited
		lf.Close()
		logTail(t, "host process", logPath)
	})
	return p
}

func (p *hostProc) state() (durable uint64, shipped bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.durable, p.shipped
}

// TestDaemonKilledAndRestarted kills the daemon (writer and shipper, a child process) with SIGKILL while
// it archives under load, its last half second not yet shipped (the store was away), then runs it again
// on the same archive directory: the new writer recovers the crashed run's tail, the new shipper resumes
// from the store's STATE and ships the rest of the crashed run too, and the run stops cleanly. The store's copy is then the host's byte for byte and
// verifies the same (PASS: the crashed run is recorded by the next START), and every event the daemon
// reported durable before the kill is in the store, exactly once.
func TestDaemonKilledAndRestarted(t *testing.T) {
	const origin = "host-daemon.example"
	const second, count = 10_000_000, 3000 // the serials of the second run
	_, pub := archivetest.Identity(t, origin)
	key := filepath.Join(filepath.Dir(pub), archive.IdentityKeyFile)
	st := shiptest.StartStore(t, "", store.Config{}, pub)
	dir := filepath.Join(t.TempDir(), "archive")
	bytesIn := func(dir string) (n int64) {
		segs, _ := filepath.Glob(filepath.Join(dir, "seg-*.aseg"))
		for _, s := range segs {
			if fi, err := os.Stat(s); err == nil {
				n += fi.Size()
			}
		}
		return n
	}

	p := startHostProc(t, dir, key, st, 1, 0)
	begin := time.Now()
	waitFor(t, 20*time.Second, "the first run ships", func() bool { d, _ := p.state(); return d > 0 && bytesIn(st.HostDir(origin)) > 0 })
	// The store goes away for the last half second, so that the second run must ship the tail of the
	// first, from the archive.
	time.Sleep(time.Until(begin.Add(time.Second)))
	st.Stop()
	time.Sleep(500 * time.Millisecond)
	p.cmd.Process.Signal(unix.SIGKILL)
	<-p.exited
	if !killed(p.cmd.ProcessState) {
		t.Fatalf("the daemon ended before it was killed: %v", p.cmd.ProcessState)
	}
	durable, _ := p.state()
	archived, stored := bytesIn(dir), bytesIn(st.HostDir(origin))
	t.Logf("killed after %s: tree size %d durable; the archive held %d bytes, the store %d", time.Since(begin).Round(time.Millisecond),
		durable, archived, stored)
	if stored >= archived {
		t.Fatalf("the store held all %d bytes of the archive at the kill: nothing left to resume", archived)
	}
	st.Start()

	p2 := startHostProc(t, dir, key, st, second, count)
	select {
	case <-p2.exited:
	case <-time.After(60 * time.Second):
		t.Fatal("the second run did not finish within 60 s")
	}
	if _, shipped := p2.state(); !p2.cmd.ProcessState.Success() || !shipped {
		t.Fatalf("the second run: %v, shipped %v", p2.cmd.ProcessState, shipped)
	}
	st.Stop()

	// The first run's events are those of its leaves that reached the disk: 1..m, with everything it
	// reported durable among them.
	count1, durableEvents, _ := archiveEvents(t, dir, durable)
	m := uint32(0)
	for s := range count1 {
		if s < second {
			m = max(m, s)
		}
	}
	if len(durableEvents) == 0 || slices.Max(durableEvents) > m {
		t.Fatalf("the first run reported %d leaves durable, holding %d events, its events end at %d", durable, len(durableEvents), m)
	}
	rep := checkNothingLost(t, dir, st.HostDir(origin), pub, serialRange{1, m}, serialRange{second, second + count - 1})
	stored1, _, _ := archiveEvents(t, st.HostDir(origin), 0)
	for _, s := range durableEvents {
		if stored1[s] != 1 {
			t.Fatalf("event %d, durable before the kill, is %d times in the store", s, stored1[s])
		}
	}
	if len(rep.Runs) != 2 || rep.Runs[0].Ended != "crashed" || rep.Runs[1].Ended != "stopped" || rep.Runs[1].Recovered == nil {
		t.Fatalf("runs %+v: want a crashed run recovered by a stopped one", rep.Runs)
	}
	checkReceipts(t, filepath.Join(st.HostDir(origin), store.ReceiptsFile), st.Key)
	checkReceipts(t, filepath.Join(dir, "receipts"), st.Key)
	t.Logf("first run: events 1..%d, %d of them reported durable before the kill (max %d); second run: %d events; recovery %+v",
		m, len(durableEvents), slices.Max(durableEvents), count, *rep.Runs[1].Recovered)
}

// mountTmpfs mounts a tmpfs with options on dir, unmounted when the test ends.
func mountTmpfs(t *testing.T, dir, options string) {
	t.Helper()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, options); err != nil {
		privtest.Unavailable(t, "mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
}

// blockEnd reports whether off ends a block of the segment data (or its magic).
func blockEnd(data []byte, off int64) bool {
	const magic = len("AUDITARCH-SEG-1\n")
	if off == 0 {
		return true
	}
	for p := int64(magic); p <= int64(len(data)); {
		if p == off {
			return true
		}
		if p+8 > int64(len(data)) {
			break
		}
		p += 8 + int64(binary.LittleEndian.Uint32(data[p:]))
	}
	return false
}

// TestStoreDiskFull fills the store's disk (a tmpfs) under load: the store refuses (ERROR "storage",
// alarm) and acknowledges nothing it does not hold, the host keeps its archive and its backlog grows.
// Once the tmpfs is made larger, the store rebuilds its state from its area (where a write cut short by
// ENOSPC left the host's bytes), the shipper catches up, nothing is lost, and the store's area verifies.
func TestStoreDiskFull(t *testing.T) {
	privtest.Root(t)
	const origin = "host-full.example"
	h := newHost(t, origin)
	mnt := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, mnt, "size=1m,mode=0700")
	st := shiptest.StartStore(t, filepath.Join(mnt, "store"), store.Config{}, h.pub)
	// One segment: the disk then fills inside a segment file, not as the store creates the next one, and
	// the write that meets ENOSPC is cut short.
	opts := fastOptions(h.id)
	opts.SegmentDuration = time.Hour
	h.start(st, opts, forward.Config{})
	stopOnCleanup(t, h)
	ld := startLoad(t, h.w, 1)
	waitFor(t, 10*time.Second, "the store acknowledges", func() bool { return h.sh.Status().Size > 0 })

	// Ballast leaves 64 KiB free: at about 35 KB a second of archive, the load fills it in seconds.
	var fs unix.Statfs_t
	if err := unix.Statfs(mnt, &fs); err != nil {
		t.Fatal(err)
	}
	if free := int64(fs.Bavail) * fs.Bsize; free > 64<<10 {
		if err := os.WriteFile(filepath.Join(mnt, "ballast"), make([]byte, free-64<<10), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	storageAlarm := func() *store.Alarm {
		for _, a := range st.Server.Alarms() {
			if a.Kind == "storage" {
				return &a
			}
		}
		return nil
	}
	waitFor(t, 20*time.Second, "a storage alarm", func() bool { return storageAlarm() != nil })
	full := time.Now()
	t.Logf("store full: %s", storageAlarm().Message)

	// While it is full: what the store acknowledged, it holds; the host's backlog grows.
	var early, late int64
	var refused string
	for time.Since(full) < 3*time.Second {
		s := h.sh.Status()
		if s.Segment != "" {
			fi, err := os.Stat(filepath.Join(st.HostDir(origin), s.Segment))
			if err != nil || fi.Size() < s.Offset {
				t.Fatalf("the store acknowledged %s:%d, it holds %v (%v)", s.Segment, s.Offset, fi, err)
			}
		}
		if strings.Contains(s.LastError, "storage") {
			refused = s.LastError
		}
		if early == 0 {
			early = s.Backlog
		}
		late = s.Backlog
		time.Sleep(50 * time.Millisecond)
	}
	if refused == "" {
		t.Errorf("the shipper was not refused with ERROR storage (last error %q)", h.sh.Status().LastError)
	}
	if late <= early {
		t.Errorf("the backlog does not grow while the store is full: %d then %d bytes", early, late)
	}
	// The store's copy ends where its last write stopped, inside a block when ENOSPC cut it short: those
	// are the host's bytes, and the store's STATE on the next connection, rebuilt from its area, reports
	// them as held.
	s := h.sh.Status()
	held, err := os.ReadFile(filepath.Join(st.HostDir(origin), s.Segment))
	if err != nil {
		t.Fatal(err)
	}
	mine, err := os.ReadFile(filepath.Join(h.dir, s.Segment))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(mine, held) {
		t.Fatalf("the store's %d bytes of %s are not the host's", len(held), s.Segment)
	}
	if s.Offset != int64(len(held)) {
		t.Errorf("the store holds %d bytes of %s, its STATE says %d", len(held), s.Segment, s.Offset)
	}
	storage := 0
	for _, a := range st.Server.Alarms() {
		if a.Kind == "storage" {
			storage++
		}
	}
	t.Logf("full for 3 s: backlog %d then %d bytes; %d storage alarms; refused: %s; the store's copy of %s ends at %d (inside a block: %v)",
		early, late, storage, refused, s.Segment, len(held), !blockEnd(held, int64(len(held))))

	if err := unix.Mount("tmpfs", mnt, "tmpfs", unix.MS_REMOUNT, "size=64m"); err != nil {
		t.Fatal(err)
	}
	catchUp := waitCaughtUp(t, h, 15*time.Second)
	t.Logf("caught up %s after the tmpfs grew", catchUp.Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond)
	first, last := ld.end()
	h.stop(15 * time.Second)
	st.Stop()
	checkNothingLost(t, h.dir, st.HostDir(origin), h.pub, serialRange{first, last})
	checkReceipts(t, filepath.Join(st.HostDir(origin), store.ReceiptsFile), st.Key)
	checkReceipts(t, filepath.Join(h.dir, "receipts"), st.Key)
}
