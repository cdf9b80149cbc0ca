package store_test

// Limits tests: a client, enrolled or not, that tries to exhaust the store — its file descriptors, its
// goroutines, its memory, its disk or its alarms — must leave it serving the honest hosts, with bounded
// cost. Each test plays the attacker against a real store on loopback.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	"github.com/auditarch/auditarch/internal/shiptest"
	"github.com/auditarch/auditarch/internal/wire"
	"github.com/auditarch/auditarch/store"
)

// limStore is a store serving on a listener the test chooses.
type limStore struct {
	srv  *store.Server
	dir  string
	log  *secBuffer
	st   *shiptest.Store // Addr and Key, for shiptest.ShipArchive and secDial
	done chan error
	stop context.CancelFunc
}

// limStart opens a store in a new directory with cfg, enrolls the host.pub files pubs and serves on ln.
func limStart(t *testing.T, cfg store.Config, ln net.Listener, pubs ...string) *limStore {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	os.MkdirAll(filepath.Join(dir, store.HostsDir), 0o700)
	for _, p := range pubs {
		vkey, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.Enroll(dir, string(vkey)); err != nil {
			t.Fatal(err)
		}
	}
	ls := &limStore{dir: dir, log: &secBuffer{}, done: make(chan error, 1)}
	cfg.Dir = dir
	cfg.Log = zerolog.New(ls.log).With().Timestamp().Logger()
	srv, err := store.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	key, err := receipt.LoadCosignVerifier(filepath.Join(dir, store.PubFile))
	if err != nil {
		t.Fatal(err)
	}
	ls.srv = srv
	ls.st = &shiptest.Store{Dir: dir, Addr: ln.Addr().String(), Key: key, Server: srv}
	ctx, cancel := context.WithCancel(context.Background())
	ls.stop = cancel
	go func() { ls.done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		ls.Stop(t)
		store.ClearImmutable(dir)
	})
	return ls
}

// Stop stops the store and fails the test if Serve returned an error (no-op when stopped).
func (ls *limStore) Stop(t *testing.T) {
	t.Helper()
	if ls.stop == nil {
		return
	}
	ls.stop()
	if err := <-ls.done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	ls.stop = nil
}

// logLines returns the store's log lines that match.
func (ls *limStore) logLines(match func(m map[string]any) bool) []map[string]any {
	var out []map[string]any
	for _, line := range bytes.Split(ls.log.Bytes(), []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(line, &m) == nil && match(m) {
			out = append(out, m)
		}
	}
	return out
}

// alarmsFile returns the alarms in alarms.log.
func (ls *limStore) alarmsFile(t *testing.T) []store.Alarm {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(ls.dir, store.AlarmsFile))
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
			t.Fatalf("alarms.log: %v: %s", err, line)
		}
		out = append(out, a)
	}
	return out
}

// waitFor polls cond every 10 ms until it holds, or fails the test after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", d, what)
		}
	}
}

// flakyListener fails Accept with EMFILE, as a process out of file descriptors does, fail times, and
// records when Accept was called.
type flakyListener struct {
	net.Listener
	mu    sync.Mutex
	fail  int
	calls []time.Time
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	l.calls = append(l.calls, time.Now())
	fail := l.fail > 0
	if fail {
		l.fail--
	}
	l.mu.Unlock()
	if fail {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", unix.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestAcceptErrorBackoff: Accept failing with EMFILE does not end Serve. The store waits 5 ms, 10 ms, …
// doubling to 1 s between attempts, logs it, and then serves a host that ships and gets its receipts.
func TestAcceptErrorBackoff(t *testing.T) {
	id, pub := archivetest.Identity(t, originA)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const fails = 10 // 5+10+20+…+640 ms, then 1 s
	ln := &flakyListener{Listener: inner, fail: fails}
	ls := limStart(t, store.Config{}, ln, pub)
	dir := shiptest.ShipArchive(t, ls.st, secOptions(id), 50, time.Millisecond)
	shiptest.SameFiles(t, dir, store.AreaDir(ls.dir, originA))

	ln.mu.Lock()
	calls := append([]time.Time(nil), ln.calls...)
	ln.mu.Unlock()
	want := 5 * time.Millisecond
	for i := 1; i <= fails; i++ {
		gap := calls[i].Sub(calls[i-1])
		t.Logf("accept error %d: next attempt after %s (want %s)", i, gap.Round(time.Millisecond), want)
		// A loaded machine delays a timer, never fires it early: only the lower bound is tight.
		if gap < want*9/10 || gap > want+2*time.Second {
			t.Errorf("after accept error %d the store waited %s, want %s", i, gap, want)
		}
		want = min(2*want, time.Second)
	}
	if st := ls.srv.Stats(); st.AcceptErrors != fails {
		t.Errorf("Stats.AcceptErrors %d, want %d", st.AcceptErrors, fails)
	}
	select {
	case err := <-ls.done:
		t.Fatalf("Serve returned: %v", err)
	default:
	}
	errs := ls.logLines(func(m map[string]any) bool {
		return m["level"] == "error" && strings.Contains(fmt.Sprint(m["error"]), "too many open files")
	})
	if len(errs) != 1 {
		t.Errorf("%d error lines about the accept errors, want 1 (the first; then once a minute):\n%s", len(errs), ls.log.Bytes())
	}
	if again := ls.logLines(func(m map[string]any) bool { return m["message"] == "accepting connections again" }); len(again) != 1 {
		t.Errorf("the store did not log that it accepts again:\n%s", ls.log.Bytes())
	}
	// Closing the listener (ctx) still stops it, without an error.
	ls.Stop(t)
}

// TestServeClosedListener: a listener closed by someone else ends Serve with an error wrapping
// net.ErrClosed (not a busy loop).
func TestServeClosedListener(t *testing.T) {
	_, pub := archivetest.Identity(t, originA)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ls := limStart(t, store.Config{}, ln, pub)
	time.Sleep(50 * time.Millisecond)
	ln.Close()
	select {
	case err := <-ls.done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Serve: %v, want net.ErrClosed", err)
		}
		ls.stop()
		ls.stop = nil
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its listener was closed")
	}
}

// envFDChild makes the test binary a store whose file descriptor limit is low (TestServeOutOfFDs).
const envFDChild = "AUDITARCH_TEST_STORE_FD_CHILD"

// fdChildLimit is the child store's RLIMIT_NOFILE: far below MaxUnauthenticated (64), so that idle
// connections exhaust it before the limit on them does.
const fdChildLimit = 40

// TestServeOutOfFDs: a store in a process with few file descriptors, flooded by TCP connections that send
// nothing until accept fails with EMFILE, keeps running (Serve used to return, and `auditarch store`
// exited): the idle connections are closed after HandshakeTimeout, the store accepts again, and an honest
// host then ships its archive.
func TestServeOutOfFDs(t *testing.T) {
	if dir := os.Getenv(envFDChild); dir != "" {
		fdChild(dir)
		return
	}
	id, pub := archivetest.Identity(t, originA)
	dir := filepath.Join(t.TempDir(), "store")
	os.MkdirAll(filepath.Join(dir, store.HostsDir), 0o700)
	vkey, _ := os.ReadFile(pub)
	if _, err := store.Enroll(dir, string(vkey)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.ClearImmutable(dir) })
	cmd := exec.Command(os.Args[0], "-test.run=^TestServeOutOfFDs$")
	cmd.Env = append(os.Environ(), envFDChild+"="+dir)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr secBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		stdin.Close()
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}()
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("child store: %v\n%s", err, stderr.Bytes())
	}
	addr = strings.TrimSpace(addr)
	t.Logf("child store on %s, RLIMIT_NOFILE %d", addr, fdChildLimit)

	// 100 connections that send nothing: more than the child's descriptors.
	var idle []net.Conn
	for range 100 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	waitFor(t, 10*time.Second, "the child store never ran out of file descriptors", func() bool {
		return bytes.Contains(stderr.Bytes(), []byte("too many open files"))
	})
	// It must outlive its handshake timeout (1 s) several times over, accepting again each time.
	time.Sleep(2500 * time.Millisecond)
	select {
	case err := <-exited:
		exited <- err
		t.Fatalf("the store exited when it ran out of file descriptors: %v\n%s", err, stderr.Bytes())
	default:
	}
	if !bytes.Contains(stderr.Bytes(), []byte("accepting connections again")) {
		t.Errorf("the store did not accept again:\n%s", stderr.Bytes())
	}
	key, err := receipt.LoadCosignVerifier(filepath.Join(dir, store.PubFile))
	if err != nil {
		t.Fatal(err)
	}
	adir := shiptest.ShipArchive(t, &shiptest.Store{Addr: addr, Key: key}, secOptions(id), 30, time.Millisecond)
	shiptest.SameFiles(t, adir, store.AreaDir(dir, originA))
	select {
	case err := <-exited:
		exited <- err
		t.Fatalf("the store exited: %v", err)
	default:
	}
	var lines int
	for _, l := range bytes.Split(stderr.Bytes(), []byte("\n")) {
		if bytes.Contains(l, []byte("too many open files")) {
			lines++
		}
	}
	t.Logf("the child logged %d lines about accept errors", lines)
}

// fdChild runs a store in dir with RLIMIT_NOFILE fdChildLimit and a 1 s handshake timeout, prints its
// address, and stops when stdin closes.
func fdChild(dir string) {
	lim := unix.Rlimit{Cur: fdChildLimit, Max: fdChildLimit}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	srv, err := store.Open(store.Config{Dir: dir, HandshakeTimeout: time.Second, Log: zerolog.New(os.Stderr).With().Timestamp().Logger()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Println(ln.Addr().String())
	ctx, cancel := context.WithCancel(context.Background())
	go func() { io.Copy(io.Discard, os.Stdin); cancel() }()
	if err := srv.Serve(ctx, ln); err != nil {
		fmt.Fprintln(os.Stderr, "Serve:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// serverSockets counts this process's open sockets whose local port is port: the store's side of its
// connections, and its listener.
func serverSockets(t *testing.T, port int) int {
	t.Helper()
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) < 10 {
				continue
			}
			_, hexPort, _ := strings.Cut(fields[1], ":")
			if p, err := strconv.ParseInt(hexPort, 16, 32); err == nil && int(p) == port {
				inodes[fields[9]] = true
			}
		}
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") && inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] {
			n++
		}
	}
	return n
}

// TestUnauthenticatedFlood: 500 TCP connections that send nothing, 20 that send garbage and 20 that send
// a ClientHello a byte at a time, against a host that is shipping. The host keeps getting
// acknowledgements; at most MaxUnauthenticated connections are held (the rest closed at once and
// counted), each for no longer than HandshakeTimeout; the store's goroutines and sockets stay bounded
// and return to what they were.
func TestUnauthenticatedFlood(t *testing.T) {
	const (
		handshake = 1500 * time.Millisecond
		maxUnauth = store.DefaultMaxUnauthenticated
		idleConns = 500
		garbage   = 20
		slowHello = 20
	)
	id, pub := archivetest.Identity(t, originA)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ls := limStart(t, store.Config{HandshakeTimeout: handshake}, ln, pub)

	// The honest host ships all along.
	dir := filepath.Join(t.TempDir(), "archive")
	w, err := writer.Create(dir, secOptions(id))
	if err != nil {
		t.Fatal(err)
	}
	var acks atomic.Int64
	sh, err := forward.New(forward.Config{Addr: ls.st.Addr, StoreKey: ls.st.Key, Identity: id, Dir: dir, Writer: w,
		Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel), OnAck: func(forward.Ack) { acks.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	shipped := make(chan struct{})
	go func() { sh.Run(ctx); close(shipped) }()
	writing := make(chan struct{})
	var serial atomic.Uint32
	go func() {
		defer close(writing)
		for ctx.Err() == nil {
			w.Append(secEvent(serial.Add(1)))
			time.Sleep(2 * time.Millisecond)
		}
	}()
	waitFor(t, 10*time.Second, "the honest host got no acknowledgement", func() bool { return acks.Load() > 5 })
	time.Sleep(200 * time.Millisecond)
	baseGoroutines, baseSockets := runtime.NumGoroutine(), serverSockets(t, port)
	t.Logf("before the flood: %d goroutines, %d store sockets", baseGoroutines, baseSockets)

	type attack struct {
		c      net.Conn
		closed time.Duration // when the store closed it, after it was opened
	}
	var attacks []*attack
	var wg sync.WaitGroup
	start := time.Now()
	dial := func() *attack {
		c, err := net.Dial("tcp", ls.st.Addr)
		if err != nil {
			t.Fatal(err)
		}
		a := &attack{c: c}
		attacks = append(attacks, a)
		return a
	}
	for i := range idleConns + garbage + slowHello {
		a := dial()
		switch {
		case i >= idleConns+garbage:
			wg.Add(1)
			go func() { // a ClientHello record header claiming 512 bytes, then a byte every 100 ms
				defer wg.Done()
				a.c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00})
				for a.c.SetWriteDeadline(time.Now().Add(time.Second)) == nil {
					if _, err := a.c.Write([]byte{1}); err != nil {
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
			}()
		case i >= idleConns:
			junk := make([]byte, 300)
			rand.Read(junk)
			a.c.Write(junk)
		}
	}
	t.Logf("opened %d connections in %s", len(attacks), time.Since(start).Round(time.Millisecond))
	acksAtFlood := acks.Load()
	// While they are open, the store holds at most maxUnauth of them.
	time.Sleep(handshake / 2)
	goroutines, sockets := runtime.NumGoroutine(), serverSockets(t, port)
	stats := ls.srv.Stats()
	t.Logf("during the flood: %d goroutines, %d store sockets, %+v", goroutines, sockets, stats)
	if stats.Unauthenticated > maxUnauth {
		t.Errorf("%d unauthenticated connections held, limit %d", stats.Unauthenticated, maxUnauth)
	}
	if sockets > baseSockets+maxUnauth {
		t.Errorf("the store holds %d sockets, %d before the flood: the limit is %d unauthenticated", sockets, baseSockets, maxUnauth)
	}
	// The store's goroutines: one per held connection; the test's own: slowHello writers.
	if goroutines > baseGoroutines+maxUnauth+slowHello+10 {
		t.Errorf("%d goroutines, %d before the flood", goroutines, baseGoroutines)
	}
	if want := uint64(len(attacks) - maxUnauth); stats.OverLimit < want {
		t.Errorf("Stats.OverLimit %d, want at least %d", stats.OverLimit, want)
	}

	// Every attacking connection is closed by the store: at once, or after the handshake timeout.
	var cwg sync.WaitGroup
	for _, a := range attacks {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			a.c.SetReadDeadline(time.Now().Add(handshake + 5*time.Second))
			io.Copy(io.Discard, a.c)
			a.closed = time.Since(start)
		}()
	}
	cwg.Wait()
	wg.Wait()
	var held, late int
	for _, a := range attacks {
		if a.closed >= handshake-100*time.Millisecond {
			held++
		}
		if a.closed > handshake+3*time.Second {
			late++
		}
		a.c.Close()
	}
	t.Logf("%d connections were held until the handshake timeout, the rest closed at once", held)
	if late > 0 {
		t.Errorf("%d connections were not closed within the handshake timeout %s", late, handshake)
	}
	if held == 0 || held > maxUnauth {
		t.Errorf("%d connections held until the handshake timeout, want 1..%d", held, maxUnauth)
	}
	// Meanwhile the honest host was acknowledged.
	during := acks.Load() - acksAtFlood
	t.Logf("the honest host got %d acknowledgements during the flood", during)
	if during < 10 {
		t.Errorf("the honest host got %d acknowledgements during the flood", during)
	}
	cancel()
	<-writing
	<-shipped
	// A new connection of the honest host is admitted, and everything it wrote reaches the store.
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	sh, err = forward.New(forward.Config{Addr: ls.st.Addr, StoreKey: ls.st.Key, Identity: id, Dir: dir, Writer: w,
		Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)})
	if err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan struct{})
	go func() { sh.Run(ctx2); close(done2) }()
	wctx, wcancel := context.WithTimeout(context.Background(), 15*time.Second)
	err = sh.WaitShipped(wctx, w.Durable())
	wcancel()
	cancel2()
	<-done2
	if err != nil {
		t.Fatalf("after the flood: %v", err)
	}
	shiptest.SameFiles(t, dir, store.AreaDir(ls.dir, originA))
	waitFor(t, 5*time.Second, "goroutines did not return to what they were", func() bool {
		return runtime.NumGoroutine() <= baseGoroutines+5
	})
	if st := ls.srv.Stats(); st.Unauthenticated != 0 {
		t.Errorf("after the flood %d connections count as unauthenticated", st.Unauthenticated)
	}
	ls.Stop(t)
	// The flood is in the log, but not a line per connection.
	over := ls.logLines(func(m map[string]any) bool {
		return strings.Contains(fmt.Sprint(m["message"]), "closed a connection at once")
	})
	failed := ls.logLines(func(m map[string]any) bool { return strings.Contains(fmt.Sprint(m["message"]), "TLS handshake failed") })
	t.Logf("log: %d lines about connections closed at once, %d about failed handshakes", len(over), len(failed))
	if len(over) == 0 || len(over) > 3 || len(failed) == 0 || len(failed) > 3 {
		t.Errorf("log: %d lines about connections closed at once, %d about failed handshakes; want 1..3 each", len(over), len(failed))
	}
}

// alarmCount returns how many alarms of kind about host are in as, and how many they stand for: each,
// and those it says were held back before it.
func alarmCount(as []store.Alarm, kind, host string) (lines, total int) {
	for _, a := range as {
		if a.Kind == kind && a.Host == host {
			lines++
			total += 1 + a.Held
		}
	}
	return lines, total
}

// TestAlarmFlood: 1000 connections without a certificate, and 200 by an enrolled host whose HELLO names
// another host, each refused with an alarm. alarms.log gets one alarm for each source and the count of
// those held back, not 1200 lines; so does the log.
func TestAlarmFlood(t *testing.T) {
	const noCert, wrongHello = 1000, 200
	_, pubA := archivetest.Identity(t, originA)
	idB, pubB := archivetest.Identity(t, originB)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ls := limStart(t, store.Config{}, ln, pubA, pubB)
	flood := func(n int, try func() error) {
		var wg sync.WaitGroup
		var next atomic.Int64
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(n) {
					if err := try(); err == nil {
						t.Error("a flood connection was accepted")
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	start := time.Now()
	flood(noCert, func() error {
		c, err := secDial(ls.st, nil)
		if err != nil {
			return err
		}
		defer c.c.Close()
		_, err = c.hello(originA)
		return err
	})
	flood(wrongHello, func() error {
		c, err := secDial(ls.st, idB)
		if err != nil {
			return err
		}
		defer c.c.Close()
		_, err = c.hello(originA)
		return err
	})
	t.Logf("%d refused connections in %s", noCert+wrongHello, time.Since(start).Round(time.Millisecond))
	waitFor(t, 10*time.Second, "the store did not refuse them all", func() bool {
		return ls.srv.Stats().AlarmsHeld == noCert+wrongHello-2
	})
	if lines, _ := alarmCount(ls.alarmsFile(t), store.AlarmRefused, ""); lines != 1 {
		t.Errorf("alarms.log has %d refused alarms about clients without a certificate during the flood, want 1", lines)
	}
	if lines, _ := alarmCount(ls.alarmsFile(t), store.AlarmRefused, originB); lines != 1 {
		t.Errorf("alarms.log has %d refused alarms about %s during the flood, want 1", lines, originB)
	}
	ls.Stop(t) // raises the counts held back
	as := ls.alarmsFile(t)
	for _, a := range as {
		t.Logf("alarm: %s host=%q remote=%s held=%d: %.150s", a.Kind, a.Host, a.Remote, a.Held, a.Message)
	}
	if lines, total := alarmCount(as, store.AlarmRefused, ""); lines != 2 || total != noCert {
		t.Errorf("alarms.log: %d refused alarms about clients without a certificate standing for %d; want 2 for %d", lines, total, noCert)
	}
	if lines, total := alarmCount(as, store.AlarmRefused, originB); lines != 2 || total != wrongHello {
		t.Errorf("alarms.log: %d refused alarms about %s standing for %d; want 2 for %d", lines, originB, total, wrongHello)
	}
	errs := ls.logLines(func(m map[string]any) bool { return m["level"] == "error" })
	warns := ls.logLines(func(m map[string]any) bool { return m["level"] == "warn" })
	t.Logf("log: %d error lines, %d warnings, %d bytes", len(errs), len(warns), len(ls.log.Bytes()))
	if len(errs) > 4 || len(warns) > 6 {
		t.Errorf("log: %d error lines, %d warnings for %d refusals", len(errs), len(warns), noCert+wrongHello)
	}
}

// TestAlarmRepeat: while a flood lasts, the count of alarms held back is raised once per AlarmRepeat, and
// the alarms raised stand for every refusal.
func TestAlarmRepeat(t *testing.T) {
	_, pubA := archivetest.Identity(t, originA)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ls := limStart(t, store.Config{AlarmRepeat: 500 * time.Millisecond}, ln, pubA)
	var n int
	for end := time.Now().Add(2200 * time.Millisecond); time.Now().Before(end); n++ {
		c, err := secDial(ls.st, nil)
		if err == nil {
			_, err = c.hello(originA)
			c.c.Close()
		}
		if err == nil {
			t.Fatal("a client without a certificate was accepted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The last period's alarm is written when it ends (the store checks every second).
	var lines, total int
	waitFor(t, 5*time.Second, "the alarms do not stand for every refusal", func() bool {
		lines, total = alarmCount(ls.alarmsFile(t), store.AlarmRefused, "")
		return total == n
	})
	t.Logf("%d refusals over 2.2 s with AlarmRepeat 500 ms: %d alarms standing for %d", n, lines, total)
	// At most one alarm a period (5 periods), and the last one held back.
	if lines < 2 || lines > 6 {
		t.Errorf("%d alarms over 2.2 s with AlarmRepeat 500 ms, want 2 to 6", lines)
	}
	ls.Stop(t)
	if _, total := alarmCount(ls.alarmsFile(t), store.AlarmRefused, ""); total != n {
		t.Errorf("after stop the alarms stand for %d refusals, there were %d", total, n)
	}
}

// limSender is an enrolled host's connection that sends DATA frames and reads the ACKs meanwhile (a
// store whose ACKs are not read stops reading).
type limSender struct {
	c       *secClient
	seq     uint64
	frame   []byte
	mu      sync.Mutex
	last    wire.AckMsg
	readErr error
	acked   chan struct{} // closed when the reader ends
}

func limSend(t *testing.T, st *shiptest.Store, id *archive.Identity) (*limSender, wire.StateMsg) {
	t.Helper()
	c, err := secDial(st, id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.c.Close() })
	state, err := c.hello(id.Signer.Name())
	if err != nil {
		t.Fatal(err)
	}
	c.c.SetDeadline(time.Time{})
	s := &limSender{c: c, acked: make(chan struct{})}
	go func() {
		defer close(s.acked)
		var buf []byte
		for {
			typ, p, err := wire.ReadFrame(c.br, buf)
			if err == nil && typ != wire.Ack {
				var m wire.ErrorMsg
				json.Unmarshal(p, &m)
				err = &wire.RemoteError{ErrorMsg: m}
			}
			var a wire.AckMsg
			if err == nil {
				err = json.Unmarshal(p, &a)
			}
			s.mu.Lock()
			if err != nil {
				s.readErr = err
				s.mu.Unlock()
				return
			}
			s.last = a
			s.mu.Unlock()
			buf = p[:0]
		}
	}()
	return s, state
}

// send buffers one DATA frame (the frame buffer is reused).
func (s *limSender) send(t *testing.T, name string, off int64, data []byte) {
	t.Helper()
	s.seq++
	s.frame = wire.AppendData(s.frame[:0], s.seq, name, off, data)
	if err := wire.WriteFrame(s.c.bw, wire.Data, s.frame); err != nil {
		t.Fatal(err)
	}
}

// waitAcked flushes and waits until every frame sent is acknowledged.
func (s *limSender) waitAcked(t *testing.T) wire.AckMsg {
	t.Helper()
	if err := s.c.bw.Flush(); err != nil {
		t.Fatal(err)
	}
	var a wire.AckMsg
	waitFor(t, 30*time.Second, "not acknowledged", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.readErr != nil {
			t.Fatalf("waiting for ACK %d: %v", s.seq, s.readErr)
		}
		a = s.last
		return a.Seq == s.seq
	})
	return a
}

// TestDataFramesBoundedMemory: an enrolled host sends the header of a block that claims 15 MiB, then
// 224 DATA frames of 64 KiB that never complete it. What the store allocates per frame is a small
// multiple of the frame, not of what it has taken (before, each frame copied every pending byte: about
// 3 GB for these 14 MiB), and what it holds is bounded by the block.
func TestDataFramesBoundedMemory(t *testing.T) {
	const (
		claimed = 15 << 20
		frames  = 224
		size    = 64 << 10
	)
	id, pub := archivetest.Identity(t, originA)
	st := shiptest.StartStore(t, "", store.Config{}, pub)
	shiptest.ShipArchive(t, st, secOptions(id), 20, time.Millisecond)
	s, state := limSend(t, st, id)
	area := filepath.Join(st.HostDir(originA), state.Segment)
	before, err := os.ReadFile(area)
	if err != nil || int64(len(before)) != state.Offset {
		t.Fatalf("area holds %d bytes of %s (%v), STATE says %d", len(before), state.Segment, err, state.Offset)
	}
	header := binary.LittleEndian.AppendUint32(nil, claimed)
	header = binary.LittleEndian.AppendUint32(header, 0)
	s.send(t, state.Segment, state.Offset, header)
	s.waitAcked(t)
	chunk := make([]byte, size)
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	off := state.Offset + int64(len(header))
	for range frames {
		s.send(t, state.Segment, off, chunk)
		off += size
	}
	a := s.waitAcked(t)
	runtime.ReadMemStats(&m1)
	runtime.GC()
	var live runtime.MemStats
	runtime.ReadMemStats(&live)
	if a.Segment != state.Segment || a.Offset != state.Offset {
		t.Errorf("ACK %+v: the store holds bytes of a block that is not complete", a)
	}
	alloc := m1.TotalAlloc - m0.TotalAlloc
	perFrame := alloc / frames
	t.Logf("%d frames of %d bytes: %d MiB allocated (store and client), %d KiB per frame; heap in use %d MiB, live after GC %d MiB (before: %d MiB)",
		frames, size, alloc>>20, perFrame>>10, m1.HeapInuse>>20, live.HeapInuse>>20, m0.HeapInuse>>20)
	// Growing buffers: the stream's (append: about 6 times the bytes in all) and the host's copy of the
	// pending bytes (doubling: 2 to 4 times). Copying every pending byte per frame was 200 times.
	if perFrame > 12*size {
		t.Errorf("%d bytes allocated per %d-byte frame", perFrame, size)
	}
	// What stays: the incomplete block twice (the stream's and the host's copy), each at most 2 MaxBlock.
	if live.HeapInuse > m0.HeapInuse+4*claimed {
		t.Errorf("live heap grew from %d to %d MiB for a %d MiB block", m0.HeapInuse>>20, live.HeapInuse>>20, claimed>>20)
	}
	s.c.c.Close()
	<-s.acked
	// The incomplete block never entered the area.
	if now, _ := os.ReadFile(area); !bytes.Equal(now, before) {
		t.Errorf("the area's segment changed: %d bytes, was %d", len(now), len(before))
	}
}

// TestDataSplitFrames: an archive of several segments sent in frames that cut magic, headers and blocks
// anywhere (7 bytes each for the start of every segment) is taken whole: the store's copy is the host's,
// byte for byte, and verifies. (A segment's magic and part of its header block in one frame and the rest
// in the next made the store slice at a negative offset and crash.)
func TestDataSplitFrames(t *testing.T) {
	id, pub := archivetest.Identity(t, originA)
	st := shiptest.StartStore(t, "", store.Config{}, pub)
	dir := filepath.Join(t.TempDir(), "archive")
	opts := secOptions(id)
	opts.SegmentDuration = 300 * time.Millisecond
	w, err := writer.Create(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 200; i++ {
		w.Append(secEvent(uint32(i)))
		time.Sleep(5 * time.Millisecond)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	segs := secSegments(t, dir)
	if len(segs) < 3 {
		t.Fatalf("%d segments, want 3 or more", len(segs))
	}
	s, _ := limSend(t, st, id)
	var frames int
	for _, name := range segs {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off < len(b); {
			n := 1000
			if off < 200 {
				n = 7
			}
			n = min(n, len(b)-off)
			s.send(t, name, int64(off), b[off:off+n])
			off += n
			frames++
		}
	}
	a := s.waitAcked(t)
	t.Logf("%d segments in %d frames: ACK %+v", len(segs), frames, a)
	shiptest.SameFiles(t, dir, st.HostDir(originA))
	vk, _, err := archive.LoadVerifierKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	r, err := verify.Dir(st.HostDir(originA), verify.Options{Key: vk})
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != verify.Pass {
		t.Fatalf("the store's copy: %s %+v", r.Status, r.Problems)
	}
}

// TestSegmentQuota: a host whose area holds MaxSegments segment files is refused a new one (ERROR quota),
// with one quota alarm however often it retries; the area keeps what it held.
func TestSegmentQuota(t *testing.T) {
	id, pub := archivetest.Identity(t, originA)
	st := shiptest.StartStore(t, "", store.Config{MaxSegments: 2}, pub)
	dir := filepath.Join(t.TempDir(), "archive")
	opts := secOptions(id)
	opts.SegmentDuration = 300 * time.Millisecond
	w, err := writer.Create(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	sh, err := forward.New(forward.Config{Addr: st.Addr, StoreKey: st.Key, Identity: id, Dir: dir, Writer: w,
		MaxBackoff: 200 * time.Millisecond, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sh.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for i := 1; i <= 150; i++ {
		w.Append(secEvent(uint32(i)))
		time.Sleep(5 * time.Millisecond)
	}
	waitFor(t, 10*time.Second, "the shipper was not refused with quota", func() bool {
		return strings.Contains(sh.Status().LastError, "quota")
	})
	time.Sleep(time.Second) // it retries meanwhile
	t.Logf("shipper: %s", sh.Status().LastError)
	held := secSegments(t, st.HostDir(originA))
	if len(held) != 2 {
		t.Fatalf("the area holds %d segments %v, quota 2", len(held), held)
	}
	host := secSegments(t, dir)
	if len(host) <= 2 {
		t.Fatalf("the host wrote %d segments", len(host))
	}
	for _, name := range held[:1] { // the first is complete; the second is as far as it was shipped
		x, _ := os.ReadFile(filepath.Join(dir, name))
		y, _ := os.ReadFile(filepath.Join(st.HostDir(originA), name))
		if !bytes.Equal(x, y) {
			t.Errorf("%s: host %d bytes, store %d", name, len(x), len(y))
		}
	}
	if held[0] != host[0] || held[1] != host[1] {
		t.Errorf("the store holds %v, the host's first segments are %v", held, host[:2])
	}
	var quota []store.Alarm
	for _, a := range st.Server.Alarms() {
		if a.Kind == store.AlarmQuota && a.Host == originA {
			quota = append(quota, a)
		}
	}
	stats := st.Server.Stats()
	t.Logf("quota alarms %d, held back %d", len(quota), stats.AlarmsHeld)
	if len(quota) != 1 || !strings.Contains(quota[0].Message, "segment") {
		t.Errorf("quota alarms: %+v", quota)
	}
	if stats.AlarmsHeld == 0 {
		t.Errorf("the shipper's retries raised no alarm held back")
	}
}

// TestEvidenceQuota: refused bytes past a host's evidence quota (refusals, or bytes) are counted, not
// kept, with a quota alarm; the refusal itself is unchanged, and the quota holds over a restart.
func TestEvidenceQuota(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  store.Config
	}{
		{"refusals", store.Config{MaxEvidence: 2}},
		{"bytes", store.Config{MaxEvidenceBytes: 6000}}, // a refusal here: 2048 bytes and a .json of about 450
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, pub := archivetest.Identity(t, originA)
			st := shiptest.StartStore(t, "", tc.cfg, pub)
			shiptest.ShipArchive(t, st, secOptions(id), 100, time.Millisecond)
			segs := secSegments(t, st.HostDir(originA))
			held, err := os.ReadFile(filepath.Join(st.HostDir(originA), segs[0]))
			if err != nil || len(held) < 4096 {
				t.Fatalf("the area holds %d bytes (%v)", len(held), err)
			}
			fork := func(i int) {
				t.Helper()
				c, err := secDial(st, id)
				if err != nil {
					t.Fatal(err)
				}
				defer c.c.Close()
				if _, err := c.hello(originA); err != nil {
					t.Fatal(err)
				}
				off := int64(len(held) - 2048 - i)
				data := bytes.Clone(held[off : off+2048])
				data[i] ^= 0xff
				c.send(t, 1, segs[0], off, data)
				c.refused(t, wire.CodeFork)
			}
			for i := range 5 {
				fork(i)
			}
			bins, _ := filepath.Glob(filepath.Join(st.HostDir(originA), store.EvidenceDir, "*.bin"))
			var size int64
			files, _ := filepath.Glob(filepath.Join(st.HostDir(originA), store.EvidenceDir, "*"))
			for _, f := range files {
				fi, _ := os.Stat(f)
				size += fi.Size()
			}
			stats := st.Server.Stats()
			t.Logf("evidence: %d refusals kept, %d bytes; %d not kept", len(bins), size, stats.EvidenceDropped)
			if len(bins) != 2 || stats.EvidenceDropped != 3 {
				t.Errorf("%d refusals kept, %d not kept; want 2 and 3", len(bins), stats.EvidenceDropped)
			}
			if tc.cfg.MaxEvidenceBytes > 0 && size > tc.cfg.MaxEvidenceBytes {
				t.Errorf("evidence holds %d bytes, quota %d", size, tc.cfg.MaxEvidenceBytes)
			}
			a := secWaitAlarm(t, st, store.AlarmQuota, originA)
			if !strings.Contains(a.Message, "evidence quota") {
				t.Errorf("quota alarm: %+v", a)
			}
			// The store counts what evidence/ holds when it starts again.
			st.Stop()
			st.Start()
			fork(5)
			if after, _ := filepath.Glob(filepath.Join(st.HostDir(originA), store.EvidenceDir, "*.bin")); len(after) != 2 {
				t.Errorf("after a restart evidence/ holds %d refusals, quota reached at 2", len(after))
			}
			if st.Server.Stats().EvidenceDropped != 1 {
				t.Errorf("after a restart the refusal was not counted as not kept: %+v", st.Server.Stats())
			}
		})
	}
}

// TestAlarmKindsDocumented: the alarm kinds are distinct, and docs/format.md ("Store directory") lists
// each.
func TestAlarmKindsDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "format.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, list, ok := strings.Cut(string(doc), "\nAlarm kinds")
	list, _, _ = strings.Cut(list, "\n\n")
	if !ok {
		t.Fatal(`docs/format.md has no "Alarm kinds" paragraph`)
	}
	seen := map[string]bool{}
	for _, k := range []string{store.AlarmTampered, store.AlarmFork, store.AlarmReplay, store.AlarmRefused, store.AlarmIncomplete,
		store.AlarmSilence, store.AlarmStopped, store.AlarmStorage, store.AlarmUpload, store.AlarmWriteOnce, store.AlarmQuota} {
		if seen[k] {
			t.Errorf("alarm kind %q twice", k)
		}
		seen[k] = true
		if !strings.Contains(list, "`"+k+"`") {
			t.Errorf("docs/format.md's alarm kinds do not list %q", k)
		}
	}
}
