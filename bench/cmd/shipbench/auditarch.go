package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/receipt"
	"github.com/auditarch/auditarch/archive/verify"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/bench/internal/harness"
	"github.com/auditarch/auditarch/store"
)

// auditarchPeer is the project's daemon (`auditarch run`) shipping to its store (`auditarch store`), two
// processes on loopback. The store writes a trace line each time it has verified and fsynced what a host
// sent, just before it acknowledges: "<unix ns> <origin> <leaves durable> <leaves its new receipt covers>"
// (store.Config.Trace). The harness follows the trace and the store's copy of the archive (verify.Stream
// over the segment files, which also yields the leaves), and reports each leaf's records as durable at the
// time of the first trace line whose count covers it. Receipt latency is reported the same way, as a note.
type auditarchPeer struct {
	bin string
	k   *harness.Kernel
	dir string

	store, daemon *harness.Proc
	cancel        context.CancelFunc
	followed      chan error

	mu       sync.Mutex
	receipts []time.Duration // per event: receipt time − audit timestamp
	waiting  []waitingEvent  // events durable and not yet covered by a receipt
}

func (a *auditarchPeer) name() string { return "auditarch" }

func (a *auditarchPeer) start(ctx context.Context, b *bench, dir string, seen func(record, time.Time)) error {
	a.k, a.dir = b.k, dir
	if a.bin == "" {
		a.bin = filepath.Join(b.out, "bin", "auditarch")
		build := exec.Command("go", "build", "-o", a.bin, "./cmd/auditarch")
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("build auditarch: %w: %s", err, out)
		}
	}
	keys, storeDir, arch, trace := filepath.Join(dir, "keys"), filepath.Join(dir, "store"), filepath.Join(dir, "archive"), filepath.Join(dir, "trace")
	if out, err := exec.Command(a.bin, "keygen", "--out", keys, "--origin", "shipbench").CombinedOutput(); err != nil {
		return fmt.Errorf("keygen: %w: %s", err, out)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if a.store, err = harness.Start(dir, "store", harness.ProcOptions{},
		a.bin, "store", "--listen", addr, "--dir", storeDir,
		"--enroll", filepath.Join(keys, archive.IdentityPubFile), "--trace", trace); err != nil {
		return err
	}
	if err := waitFor(ctx, 10*time.Second, a.store, "the store listening", func() bool { return listening(port) }); err != nil {
		return err
	}
	if a.daemon, err = harness.Start(dir, "daemon", harness.ProcOptions{},
		a.bin, "run", "--archive", arch, "--key", filepath.Join(keys, archive.IdentityKeyFile), "--rules", b.rulesFile,
		"--store", addr, "--store-key", filepath.Join(storeDir, receipt.StorePubFile)); err != nil {
		return err
	}
	fctx, cancel := context.WithCancel(context.Background())
	a.cancel, a.followed = cancel, make(chan error, 1)
	var first sync.Once
	ready := make(chan struct{})
	go func() {
		a.followed <- a.follow(fctx, trace, storeDir, seen, func() { first.Do(func() { close(ready) }) })
	}()
	// Ready once the daemon is registered and its START has made the whole way to the store.
	if _, err := a.k.WaitPID(ctx, 20*time.Second, func(pid uint32) (bool, error) { return int(pid) == a.daemon.PID(), nil }); err != nil {
		return fmt.Errorf("auditarch did not register: %w: %s", err, a.daemon.StderrTail())
	}
	// ... and has loaded the rule (it logs "capturing" once the rules are in).
	if err := waitFor(ctx, 20*time.Second, a.daemon, "auditarch capturing", func() bool {
		b, _ := a.daemon.Stderr()
		return strings.Contains(string(b), `"message":"capturing"`)
	}); err != nil {
		return err
	}
	select {
	case <-ready:
		return nil
	case <-time.After(20 * time.Second):
		return fmt.Errorf("nothing reached the store within 20s: %s", a.daemon.StderrTail())
	case <-ctx.Done():
		return ctx.Err()
	}
}

// follow reads the trace as it grows and, for each acknowledgement, the store's copy up to the leaves
// it covers; it calls seen for every record of every event leaf with the acknowledgement's time.
func (a *auditarchPeer) follow(ctx context.Context, trace, storeDir string, seen func(record, time.Time), ready func()) error {
	var tf *os.File
	var rd *bufio.Reader
	var area string
	var s *verify.Stream
	files := map[string]int64{} // bytes of each segment file fed
	var leaves []*archive.Leaf  // leaves read and not yet reported
	var firstIndex uint64       // index of leaves[0]
	var pendingLine string
	s = verify.NewStream(verify.Options{})
	s.OnLeaf = func(i uint64, l *archive.Leaf) {
		if len(leaves) == 0 {
			firstIndex = i
		}
		c := *l
		c.Body = nil
		c.Event.Records = make([]audit.Record, len(l.Event.Records))
		for k, r := range l.Event.Records {
			c.Event.Records[k] = audit.Record{Type: r.Type, Text: append([]byte(nil), r.Text...)}
		}
		leaves = append(leaves, &c)
	}
	// feed reads the area's segment files on from where it stopped, until the stream holds size leaves.
	feed := func(size uint64) error {
		if area == "" {
			m, _ := filepath.Glob(filepath.Join(storeDir, "hosts", "*"))
			if len(m) == 0 {
				return errors.New("no host area in the store")
			}
			area = m[0]
		}
		segs, err := filepath.Glob(filepath.Join(area, "seg-*.aseg"))
		if err != nil {
			return err
		}
		sort.Strings(segs)
		for _, f := range segs {
			if s.Size() >= size {
				return nil
			}
			name := filepath.Base(f)
			data, err := readFrom(f, files[name])
			if err != nil {
				return err
			}
			if len(data) > 0 {
				if _, err := s.Write(name, files[name], data); err != nil {
					return err
				}
				files[name] += int64(len(data))
			}
		}
		return nil
	}
	for {
		if tf == nil {
			if f, err := os.Open(trace); err == nil {
				tf, rd = f, bufio.NewReader(f)
				defer tf.Close()
			}
		}
		progressed := false
		for rd != nil {
			line, err := rd.ReadString('\n')
			pendingLine += line
			if err != nil {
				break
			}
			line, pendingLine = pendingLine, ""
			progressed = true
			f := strings.Fields(line)
			if len(f) != 4 {
				continue
			}
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			size, _ := strconv.ParseUint(f[2], 10, 64)
			covered, _ := strconv.ParseUint(f[3], 10, 64)
			at := time.Unix(0, ns)
			if err := feed(size); err != nil {
				return err
			}
			for len(leaves) > 0 && firstIndex < size {
				l, i := leaves[0], firstIndex
				leaves, firstIndex = leaves[1:], firstIndex+1
				if l.Kind != archive.LeafEvent {
					continue
				}
				for _, r := range l.Event.Records {
					line := fmt.Sprintf("type=%s msg=%s", recordType(r.Type), r.Text)
					if rec, ok := parseRecord([]byte(line)); ok {
						seen(rec, at)
					}
				}
				a.pendingReceipt(i, l)
			}
			if covered > 0 {
				a.receiptAt(covered, at)
			}
			ready()
		}
		if !progressed {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Millisecond):
			}
		}
	}
}

func recordType(t uint16) string {
	if t == 1300 {
		return "SYSCALL"
	}
	return strconv.Itoa(int(t))
}

// pendingReceipt notes an event durable and not yet covered by a receipt.
func (a *auditarchPeer) pendingReceipt(i uint64, l *archive.Leaf) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.waiting = append(a.waiting, waitingEvent{i, time.Unix(l.Event.Sec, int64(l.Event.Msec)*int64(time.Millisecond))})
}

type waitingEvent struct {
	index uint64
	stamp time.Time
}

// receiptAt records a receipt given at time at for the checkpoint of the first covered leaves.
func (a *auditarchPeer) receiptAt(covered uint64, at time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	k := 0
	for ; k < len(a.waiting) && a.waiting[k].index < covered; k++ {
		a.receipts = append(a.receipts, at.Sub(a.waiting[k].stamp))
	}
	a.waiting = a.waiting[k:]
}

func (a *auditarchPeer) stop() ([]string, error) {
	var errs []error
	var notes []string
	if a.daemon != nil {
		if err := a.daemon.Stop(30 * time.Second); err != nil {
			errs = append(errs, err)
		}
		a.daemon = nil
	}
	if a.cancel != nil {
		time.Sleep(200 * time.Millisecond) // the last acknowledgements reach the trace
		a.cancel()
		if err := <-a.followed; err != nil {
			errs = append(errs, fmt.Errorf("follow the store: %w", err))
		}
		a.cancel = nil
	}
	if a.store != nil {
		if err := a.store.Stop(20 * time.Second); err != nil {
			errs = append(errs, err)
		}
		a.store = nil
		store.ClearImmutable(filepath.Join(a.dir, "store")) // the bench's output stays removable
	}
	a.mu.Lock()
	if len(a.receipts) > 0 {
		l := percentiles(a.receipts, len(a.receipts))
		verdict := "PASS"
		if l.P99Ms >= 1500 {
			verdict = "FAIL"
		}
		notes = append(notes, fmt.Sprintf("auditarch receipts: %d events covered, receipt latency p50 %.1f ms, p99 %.1f ms, max %.1f ms (target p99 < 1500 ms %s)",
			len(a.receipts), l.P50Ms, l.P99Ms, l.MaxMs, verdict))
	}
	a.receipts = nil
	a.mu.Unlock()
	return notes, errors.Join(errs...)
}

// readFrom returns the bytes of the file at path from offset off to its end.
func readFrom(path string, off int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() <= off {
		return nil, err
	}
	b := make([]byte, st.Size()-off)
	_, err = f.ReadAt(b, off)
	return b, err
}
