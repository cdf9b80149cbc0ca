// Command loop is a benchmark workload: it does one audited operation in a tight loop for a fixed time and
// prints how many it did as one JSON line.
//
// The side-by-side harness builds this program to a separate path per workload (openloop, connectloop,
// execloop) so that a kernel rule can select it with -F exe=PATH.
//
//	open     openat(path, O_RDONLY) + close
//	connect  TCP connect to a listener on 127.0.0.1 in this process + close (SO_LINGER 0, so no TIME_WAIT)
//	exec     fork + execve(exe) + wait4
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Result is the line the loop prints when done.
type Result struct {
	Op      string  `json:"op"`
	Ops     int64   `json:"ops"`
	Errors  int64   `json:"errors"`
	Seconds float64 `json:"seconds"`
}

func main() {
	op := flag.String("op", "", "operation: open, connect or exec")
	dur := flag.Duration("d", 5*time.Second, "how long to loop")
	file := flag.String("file", "", "file to open (open)")
	exe := flag.String("exe", "/bin/true", "program to execute (exec)")
	flag.Parse()

	var (
		res Result
		err error
	)
	switch *op {
	case "open":
		res, err = openLoop(*file, *dur)
	case "connect":
		res, err = connectLoop(*dur)
	case "exec":
		res, err = execLoop(*exe, *dur)
	default:
		err = fmt.Errorf("unknown -op %q", *op)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loop:", err)
		os.Exit(1)
	}
	res.Op = *op
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		os.Exit(1)
	}
}

// timed calls step until d has passed, checking the clock every batch calls.
func timed(d time.Duration, batch int, step func() error) Result {
	var r Result
	start := time.Now()
	deadline := start.Add(d)
	for time.Now().Before(deadline) {
		for range batch {
			if step() != nil {
				r.Errors++
			}
			r.Ops++
		}
	}
	r.Seconds = time.Since(start).Seconds()
	return r
}

func openLoop(path string, d time.Duration) (Result, error) {
	if path == "" {
		return Result{}, errors.New("open needs -file")
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Result{}, fmt.Errorf("open %s: %w", path, err)
	}
	unix.Close(fd)
	return timed(d, 64, func() error {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		return unix.Close(fd)
	}), nil
}

func connectLoop(d time.Duration) (Result, error) {
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return Result{}, fmt.Errorf("listener socket: %w", err)
	}
	defer unix.Close(lfd)
	lo := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	if err := unix.Bind(lfd, lo); err != nil {
		return Result{}, fmt.Errorf("bind: %w", err)
	}
	if err := unix.Listen(lfd, 4096); err != nil {
		return Result{}, fmt.Errorf("listen: %w", err)
	}
	sa, err := unix.Getsockname(lfd)
	if err != nil {
		return Result{}, fmt.Errorf("getsockname: %w", err)
	}
	go func() {
		for {
			nfd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
			if err == nil {
				unix.Close(nfd)
			} else if errors.Is(err, unix.EBADF) || errors.Is(err, unix.EINVAL) {
				return
			}
		}
	}()
	linger := &unix.Linger{Onoff: 1, Linger: 0}
	return timed(d, 16, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, linger); err != nil {
			return err
		}
		return unix.Connect(fd, sa)
	}), nil
}

func execLoop(exe string, d time.Duration) (Result, error) {
	argv := []string{exe}
	attr := &syscall.ProcAttr{Env: []string{}}
	return timed(d, 1, func() error {
		pid, err := syscall.ForkExec(exe, argv, attr)
		if err != nil {
			return err
		}
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
			return err
		}
		if ws.ExitStatus() != 0 {
			return fmt.Errorf("%s exited %d", exe, ws.ExitStatus())
		}
		return nil
	}), nil
}
