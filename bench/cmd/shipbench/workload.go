package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/bench/internal/harness"
)

// The workload's events carry their own index: openat's fourth argument (mode) is ignored without O_CREAT,
// but the kernel logs it as a3, so event i is openat(AT_FDCWD, target, O_RDONLY, indexMagic|i) and its
// SYSCALL record says a3=5b0000xx. Other openat calls of the generator (the Go runtime's, at start) have
// a3=0 and are not counted.
const (
	indexMagic = 0x5b000000
	indexMask  = 0x00ffffff // at most 16M events per run
	ruleKey    = "shipbench"
)

// genSubcommand is the hidden first argument that makes this program the paced generator. The harness runs
// it from a private copy of its own binary, so that an exe= rule selects the generator and nothing else.
const genSubcommand = "__generate"

// genResult is the line the generator prints when done.
type genResult struct {
	Sent    int64   `json:"sent"`
	Errors  int64   `json:"errors"`
	Seconds float64 `json:"seconds"`
	// MaxLateUs is how far behind its schedule the generator fell at worst, in µs: a large value means
	// the audited syscall itself was slowed (a full kernel backlog makes it sleep).
	MaxLateUs int64 `json:"max_late_us"`
}

// generate is the generator process: it does one audited openat per event at rate events/s for dur, and
// writes the wall-clock time (Unix ns, taken just before the syscall) of each to the times file.
//
// Pacing is open-loop: event i is due at start + i/rate; the generator sleeps until the next due time and
// catches up on any it is late for. Go's timers wake with about 1 ms granularity here, so at 10,000/s the
// events come in bursts of about ten per millisecond. It stops at start + dur even if it is behind: a peer
// that cannot keep up makes the audited syscalls wait on the full kernel backlog, and then fewer events
// than rate × dur are sent.
func generate(args []string) error {
	fs := flag.NewFlagSet(genSubcommand, flag.ContinueOnError)
	rate := fs.Int("rate", 1000, "events per second")
	dur := fs.Duration("d", 10*time.Second, "how long")
	target := fs.String("file", "", "file to open")
	times := fs.String("times", "", "where to write the send times")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rate <= 0 || *target == "" || *times == "" {
		return errors.New("generate needs -rate > 0, -file and -times")
	}
	n := int64(*rate) * int64(*dur) / int64(time.Second)
	if n > indexMask {
		return fmt.Errorf("%d events is more than the index can hold (%d)", n, indexMask)
	}
	path, err := unix.BytePtrFromString(*target)
	if err != nil {
		return err
	}
	fdcwd := unix.AT_FDCWD // a variable: the negative constant does not convert to uintptr
	sent := make([]int64, n)
	var res genResult
	interval := time.Second / time.Duration(*rate)
	start := time.Now()
	end := start.Add(*dur)
	for i := range n {
		due := start.Add(time.Duration(i) * interval)
		if time.Now().After(end) {
			sent = sent[:i]
			break
		}
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		now := time.Now()
		if late := now.Sub(due).Microseconds(); late > res.MaxLateUs {
			res.MaxLateUs = late
		}
		sent[i] = now.UnixNano()
		fd, _, errno := unix.Syscall6(unix.SYS_OPENAT, uintptr(fdcwd), uintptr(unsafe.Pointer(path)),
			unix.O_RDONLY|unix.O_CLOEXEC, uintptr(indexMagic|i), 0, 0)
		if errno != 0 {
			res.Errors++
		} else {
			unix.Close(int(fd))
		}
		res.Sent++
	}
	res.Seconds = time.Since(start).Seconds()
	buf := make([]byte, 8*len(sent))
	for i, t := range sent {
		binary.LittleEndian.PutUint64(buf[8*i:], uint64(t))
	}
	if err := os.WriteFile(*times, buf, 0o644); err != nil {
		return fmt.Errorf("write send times: %w", err)
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// sentEvents is what one generator run did: the send time of event i is Times[i].
type sentEvents struct {
	genResult
	Times []time.Time
}

// runGenerator runs the generator at rate for dur under the harness's rule, and returns what it sent. If it
// overruns (a stuck peer can make every audited syscall sleep), unstick is called before it is killed.
func (b *bench) runGenerator(ctx context.Context, dir string, rate int, dur time.Duration, unstick func()) (sentEvents, error) {
	times := filepath.Join(dir, "send-times.bin")
	p, err := harness.Start(dir, "generator", harness.ProcOptions{},
		b.gen, genSubcommand, "-rate", fmt.Sprint(rate), "-d", dur.String(), "-file", b.target, "-times", times)
	if err != nil {
		return sentEvents{}, err
	}
	switch err := p.Await(ctx, dur+30*time.Second, unstick); {
	case errors.Is(err, harness.ErrOverran):
		return sentEvents{}, errors.New("generator stalled 30s past its end: the peer stopped reading")
	case err != nil:
		return sentEvents{}, err
	}
	if err := p.Result(); err != nil {
		return sentEvents{}, err
	}
	out, err := p.Stdout()
	if err != nil {
		return sentEvents{}, err
	}
	var s sentEvents
	if err := json.Unmarshal(out, &s.genResult); err != nil {
		return sentEvents{}, fmt.Errorf("parse generator output %q: %w", out, err)
	}
	raw, err := os.ReadFile(times)
	if err != nil {
		return sentEvents{}, fmt.Errorf("read send times: %w", err)
	}
	if int64(len(raw)) != 8*s.Sent {
		return sentEvents{}, fmt.Errorf("send times: %d bytes for %d events", len(raw), s.Sent)
	}
	s.Times = make([]time.Time, s.Sent)
	for i := range s.Times {
		s.Times[i] = time.Unix(0, int64(binary.LittleEndian.Uint64(raw[8*i:])))
	}
	os.Remove(times)
	return s, nil
}
