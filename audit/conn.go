package audit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"unsafe"

	libaudit "github.com/elastic/go-libaudit/v2"
	"golang.org/x/sys/unix"
)

// Conn is the daemon's connection to the kernel audit subsystem: a unicast data socket registered as the
// audit daemon, on which only event records arrive, and a separate control socket (go-libaudit's client)
// for status and rules. Two sockets, because go-libaudit discards events that arrive while a control
// request waits for its reply.
type Conn struct {
	fd   int
	ctl  *libaudit.AuditClient
	buf  []byte
	from unix.RawSockaddrNetlink
}

// DaemonError says another process is registered as the kernel's audit daemon.
type DaemonError struct{ PID uint32 }

func (e *DaemonError) Error() string {
	return fmt.Sprintf("another audit daemon (pid %d) is registered with the kernel", e.PID)
}

// ErrIdle is returned by Receive when no record arrived within the receive timeout.
var ErrIdle = errors.New("no audit record within the receive timeout")

// ErrOverrun is returned by Receive when the socket's receive buffer overflowed (ENOBUFS).
var ErrOverrun = errors.New("netlink receive buffer overrun")

// Netlink constants (linux/netlink.h, linux/audit.h).
const (
	auditSet       = 1001
	auditReplace   = 1329
	nlmsgError     = 2
	statusMaskPID  = 4
	sizeofStatus   = 4 * 11
	nlmsgHdrLen    = 16
	maxRecordBytes = 1 << 16
)

// Dial opens the control and data sockets. rcvbuf sizes the data socket's receive buffer with
// SO_RCVBUFFORCE (bytes; 0 keeps the default). Records are not delivered until Register.
func Dial(rcvbuf int) (*Conn, error) {
	ctl, err := libaudit.NewAuditClient(nil)
	if err != nil {
		return nil, fmt.Errorf("open audit control socket: %w", err)
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_AUDIT)
	if err != nil {
		ctl.Close()
		return nil, fmt.Errorf("open audit data socket: %w", err)
	}
	c := &Conn{fd: fd, ctl: ctl, buf: make([]byte, maxRecordBytes)}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		c.Close()
		return nil, fmt.Errorf("bind audit data socket: %w", err)
	}
	if rcvbuf > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf); err != nil {
			c.Close()
			return nil, fmt.Errorf("set audit socket receive buffer to %d bytes: %w", rcvbuf, err)
		}
	}
	tv := unix.Timeval{Usec: 100_000}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		c.Close()
		return nil, fmt.Errorf("set audit socket receive timeout: %w", err)
	}
	return c, nil
}

// Control returns the control client, for status and rules. It must not be used from two goroutines at
// once.
func (c *Conn) Control() *libaudit.AuditClient { return c.ctl }

// Register makes this process the kernel's audit daemon, with the data socket as the destination of every
// record. If another live process holds that role it returns a *DaemonError.
func (c *Conn) Register() error {
	if err := c.setPID(uint32(os.Getpid()), true); err != nil {
		if errors.Is(err, unix.EEXIST) {
			if st, serr := c.ctl.GetStatus(); serr == nil && st.PID != 0 {
				return &DaemonError{PID: st.PID}
			}
			return &DaemonError{}
		}
		return fmt.Errorf("register as the audit daemon: %w", err)
	}
	return nil
}

// Unregister tells the kernel to stop sending records. Records already queued on the socket can still be
// read with Receive until it returns ErrIdle.
func (c *Conn) Unregister() error {
	if err := c.setPID(0, false); err != nil {
		return fmt.Errorf("unregister as the audit daemon: %w", err)
	}
	return nil
}

// auditUserMsg is AUDIT_USER (linux/audit.h AUDIT_FIRST_USER_MSG): a userspace message the kernel stamps
// with the next serial and delivers like its own records.
const auditUserMsg = 1100

// Mark sends text (key=value pairs) as a userspace audit message. The kernel gives it the next serial and
// delivers it to the registered daemon: a run marks its start and its end with it, so that the archive
// holds the serial of both even when nothing else happened (a restarted daemon counts the serials issued
// since). The kernel drops it while auditing is disabled. Needs CAP_AUDIT_WRITE.
func (c *Conn) Mark(text string) error {
	msg := make([]byte, nlmsgHdrLen+len(text))
	le := binary.LittleEndian
	le.PutUint32(msg[0:], uint32(len(msg)))
	le.PutUint16(msg[4:], auditUserMsg)
	le.PutUint16(msg[6:], unix.NLM_F_REQUEST)
	copy(msg[nlmsgHdrLen:], text)
	if err := unix.Sendto(c.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("send audit mark: %w", err)
	}
	return nil
}

// setPID sends AUDIT_SET(pid) from the data socket: the kernel sends records to the port that registered.
func (c *Conn) setPID(pid uint32, ack bool) error {
	msg := make([]byte, nlmsgHdrLen+sizeofStatus)
	le := binary.LittleEndian
	le.PutUint32(msg[0:], uint32(len(msg)))
	le.PutUint16(msg[4:], auditSet)
	flags := uint16(unix.NLM_F_REQUEST)
	if ack {
		flags |= unix.NLM_F_ACK
	}
	le.PutUint16(msg[6:], flags)
	le.PutUint32(msg[8:], 1) // sequence number
	le.PutUint32(msg[nlmsgHdrLen:], statusMaskPID)
	le.PutUint32(msg[nlmsgHdrLen+12:], pid)
	if err := unix.Sendto(c.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	if !ack {
		return nil
	}
	// The kernel acknowledges before it starts delivering records to this socket.
	for {
		typ, data, err := c.receive()
		if errors.Is(err, ErrIdle) {
			continue
		}
		if err != nil {
			return err
		}
		if typ != nlmsgError || len(data) < 4 {
			return fmt.Errorf("unexpected reply type %d to AUDIT_SET", typ)
		}
		if errno := int32(le.Uint32(data)); errno != 0 {
			return unix.Errno(-errno)
		}
		return nil
	}
}

// Receive returns the next message: its netlink type and payload. The payload is valid until the next
// call. It returns ErrIdle after the receive timeout (100 ms) with nothing to read, and ErrOverrun when the
// kernel reported a full receive buffer. Messages that are not from the kernel are discarded.
func (c *Conn) Receive() (uint16, []byte, error) {
	for {
		typ, data, err := c.receive()
		if err != nil || (typ != nlmsgError && typ != auditReplace) {
			return typ, data, err
		}
		// Acknowledgements (of Unregister, say) are not records, and neither is AUDIT_REPLACE: the kernel's
		// probe of the registered socket, sent whenever any process sets the audit pid (its payload is a
		// binary pid). An attempt to take over is logged by the kernel as a CONFIG_CHANGE record.
	}
}

func (c *Conn) receive() (uint16, []byte, error) {
	for {
		fromLen := uint32(unix.SizeofSockaddrNetlink)
		// A raw recvfrom with a preallocated address: unix.Recvfrom allocates a Sockaddr per call, and
		// this is once per record.
		n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(c.fd),
			uintptr(unsafe.Pointer(&c.buf[0])), uintptr(len(c.buf)), 0,
			uintptr(unsafe.Pointer(&c.from)), uintptr(unsafe.Pointer(&fromLen)))
		switch errno {
		case 0:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, nil, ErrIdle
		case unix.ENOBUFS:
			return 0, nil, ErrOverrun
		default:
			return 0, nil, fmt.Errorf("receive from audit socket: %w", errno)
		}
		if c.from.Pid != 0 {
			continue // only the kernel may speak on this socket
		}
		if n < nlmsgHdrLen {
			continue
		}
		typ := binary.LittleEndian.Uint16(c.buf[4:])
		// The kernel's nlmsg_len for audit records is not reliable; the datagram length is.
		data := c.buf[nlmsgHdrLen:n]
		for len(data) > 0 && (data[len(data)-1] == 0 || data[len(data)-1] == '\n') {
			data = data[:len(data)-1]
		}
		return typ, data, nil
	}
}

// Close closes both sockets. Closing the registered socket also unregisters it in the kernel.
func (c *Conn) Close() error {
	err := unix.Close(c.fd)
	return errors.Join(err, c.ctl.Close())
}
