// Command barereader is the floor of the side-by-side benchmark: the least a go-libaudit consumer can do.
//
// It registers itself as the audit daemon (SetPID on go-libaudit's unicast socket), raises the socket's
// receive buffer, and runs a Receive loop that only counts records: all of them, SYSCALL records, and SYSCALL
// records carrying the benchmark's rule key (the others are the kernel auditing audit control messages such
// as AUDIT_SET). On SIGTERM or SIGINT it unregisters and prints its counts as one JSON line.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"

	libaudit "github.com/elastic/go-libaudit/v2"
	"github.com/elastic/go-libaudit/v2/auparse"
	"golang.org/x/sys/unix"
)

// Counts is the line printed on exit.
type Counts struct {
	Records  int64 `json:"records"`
	Syscalls int64 `json:"syscalls"`
	Keyed    int64 `json:"keyed"`
	EOE      int64 `json:"eoe"`
	ENOBUFS  int64 `json:"enobufs"`
	RcvBuf   int   `json:"rcvbuf"`
}

func main() {
	rcvbuf := flag.Int("rcvbuf", 16<<20, "receive buffer size in bytes (SO_RCVBUFFORCE)")
	key := flag.String("key", "bench", "rule key to count SYSCALL records of")
	flag.Parse()
	if err := run(*rcvbuf, []byte(` key="`+*key+`"`)); err != nil {
		fmt.Fprintln(os.Stderr, "barereader:", err)
		os.Exit(1)
	}
}

func run(rcvbuf int, key []byte) error {
	c, err := libaudit.NewAuditClient(nil)
	if err != nil {
		return fmt.Errorf("audit client: %w", err)
	}
	defer c.Close()
	fd, err := auditSocket()
	if err != nil {
		return err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf); err != nil {
		return fmt.Errorf("set SO_RCVBUFFORCE: %w", err)
	}
	got, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
	if err != nil {
		return fmt.Errorf("get SO_RCVBUF: %w", err)
	}
	if err := c.SetPID(libaudit.WaitForReply); err != nil {
		return fmt.Errorf("register as audit pid: %w", err)
	}

	var records, syscalls, keyed, eoe, enobufs atomic.Int64
	var stopping atomic.Bool
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		stopping.Store(true)
		closeErr := c.Close() // unregisters (pid 0) and closes the socket under Receive
		json.NewEncoder(os.Stdout).Encode(Counts{
			Records: records.Load(), Syscalls: syscalls.Load(), Keyed: keyed.Load(), EOE: eoe.Load(),
			ENOBUFS: enobufs.Load(), RcvBuf: got,
		})
		if closeErr != nil {
			fmt.Fprintln(os.Stderr, "barereader: close:", closeErr)
			os.Exit(1)
		}
		os.Exit(0)
	}()

	for {
		m, err := c.Receive(false)
		switch {
		case err == nil:
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.EAGAIN):
			continue
		case errors.Is(err, unix.ENOBUFS):
			enobufs.Add(1)
			continue
		case stopping.Load():
			select {} // the signal handler prints and exits
		default:
			return fmt.Errorf("receive: %w", err)
		}
		records.Add(1)
		switch m.Type {
		case auparse.AUDIT_SYSCALL:
			syscalls.Add(1)
			if bytes.Contains(m.Data, key) {
				keyed.Add(1)
			}
		case auparse.AUDIT_EOE:
			eoe.Add(1)
		}
	}
}

// auditSocket finds the NETLINK_AUDIT socket go-libaudit opened (its descriptor is not exported).
func auditSocket() (int, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1, fmt.Errorf("list fds: %w", err)
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dom, err1 := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
		proto, err2 := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
		if err1 == nil && err2 == nil && dom == unix.AF_NETLINK && proto == unix.NETLINK_AUDIT {
			return fd, nil
		}
	}
	return -1, errors.New("no NETLINK_AUDIT socket among open fds")
}
