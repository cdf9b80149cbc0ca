package forward

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// A RELP client (rsyslog's Reliable Event Logging Protocol, as librelp and imrelp speak it). Every frame
// is "TXNR SP COMMAND SP DATALEN [SP DATA] LF"; the client opens the session with "open" (offering
// relp_version=0 and commands=syslog), sends each message as a "syslog" command and the server answers
// each transaction, in order, with "rsp" and a status ("200 OK"); "close" ends the session, and the
// server may say "serverclose" at any time. Transaction numbers run from 1 to 999999999 and wrap to 1.
// Up to a window of frames are in flight unanswered.

// RELP limits and constants.
const (
	relpMaxTxnr    = 999_999_999
	relpMaxFrame   = 128 << 10 // the longest reply read (imrelp's replies are short)
	relpAckTimeout = 30 * time.Second
	relpOffer      = "relp_version=0\nrelp_software=auditarch\ncommands=syslog"
)

// RELPError is a RELP reply other than 200.
type RELPError struct {
	Txnr uint32
	Code int
	Text string
}

func (e *RELPError) Error() string {
	return fmt.Sprintf("relp: transaction %d refused: %d %s", e.Txnr, e.Code, e.Text)
}

type relpTransport struct {
	c      net.Conn
	r      *bufio.Reader
	w      *bufio.Writer
	txnr   uint32
	window int
	err    error
}

// openRELP opens a RELP session on c with a window of unacknowledged frames.
func openRELP(c net.Conn, window int) (*relpTransport, error) {
	t := &relpTransport{c: c, r: bufio.NewReaderSize(c, 64<<10), w: bufio.NewWriterSize(c, 256<<10), window: max(window, 1)}
	n := t.next()
	t.frame(n, "open", []byte(relpOffer))
	if err := t.w.Flush(); err != nil {
		c.Close()
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	code, text, err := t.reply(n)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("relp open: %w", err)
	}
	if code != 200 {
		c.Close()
		return nil, &RELPError{Txnr: n, Code: code, Text: text}
	}
	if !strings.Contains(text, "syslog") {
		c.Close()
		return nil, fmt.Errorf("relp open: the server does not offer the syslog command: %q", text)
	}
	return t, nil
}

func (t *relpTransport) next() uint32 {
	t.txnr++
	if t.txnr > relpMaxTxnr {
		t.txnr = 1
	}
	return t.txnr
}

func (t *relpTransport) frame(txnr uint32, cmd string, data []byte) {
	var b [24]byte
	t.w.Write(strconv.AppendUint(b[:0], uint64(txnr), 10))
	t.w.WriteByte(' ')
	t.w.WriteString(cmd)
	t.w.WriteByte(' ')
	t.w.Write(strconv.AppendInt(b[:0], int64(len(data)), 10))
	if len(data) > 0 {
		t.w.WriteByte(' ')
		t.w.Write(data)
	}
	t.w.WriteByte('\n')
}

// reply reads the server's answer to transaction want: its status code and the rest of its text.
func (t *relpTransport) reply(want uint32) (int, string, error) {
	txnr, err := t.token(' ', 10)
	if err != nil {
		return 0, "", err
	}
	cmd, err := t.token(' ', 32)
	if err != nil {
		return 0, "", err
	}
	lenTok, sep, err := t.lenToken()
	if err != nil {
		return 0, "", err
	}
	n, err := strconv.Atoi(lenTok)
	if err != nil || n < 0 || n > relpMaxFrame {
		return 0, "", fmt.Errorf("relp: bad data length %q", lenTok)
	}
	data := make([]byte, n)
	if n > 0 {
		if sep != ' ' {
			return 0, "", errors.New("relp: no space before the data")
		}
		if _, err := io.ReadFull(t.r, data); err != nil {
			return 0, "", err
		}
	}
	if n > 0 || sep != '\n' {
		if b, err := t.r.ReadByte(); err != nil || b != '\n' {
			return 0, "", fmt.Errorf("relp: frame without its trailer (%v)", err)
		}
	}
	if cmd == "serverclose" {
		return 0, "", errors.New("relp: the server closed the session")
	}
	if cmd != "rsp" {
		return 0, "", fmt.Errorf("relp: unexpected command %q from the server", cmd)
	}
	if got, err := strconv.ParseUint(txnr, 10, 32); err != nil || uint32(got) != want {
		return 0, "", fmt.Errorf("relp: reply to transaction %s, expected %d", txnr, want)
	}
	s := string(data)
	code, rest, _ := strings.Cut(s, " ")
	c, err := strconv.Atoi(code)
	if err != nil {
		return 0, "", fmt.Errorf("relp: reply %q has no status", s)
	}
	return c, rest, nil
}

func (t *relpTransport) token(sep byte, maxLen int) (string, error) {
	var b []byte
	for {
		c, err := t.r.ReadByte()
		if err != nil {
			return "", err
		}
		if c == sep {
			return string(b), nil
		}
		if len(b) >= maxLen {
			return "", fmt.Errorf("relp: token longer than %d bytes", maxLen)
		}
		b = append(b, c)
	}
}

// lenToken reads DATALEN, which ends in a space (data follows) or the trailer (no data).
func (t *relpTransport) lenToken() (string, byte, error) {
	var b []byte
	for {
		c, err := t.r.ReadByte()
		if err != nil {
			return "", 0, err
		}
		if c == ' ' || c == '\n' {
			return string(b), c, nil
		}
		if len(b) >= 9 {
			return "", 0, errors.New("relp: data length too long")
		}
		b = append(b, c)
	}
}

// Send sends msgs as syslog commands, keeping up to the window in flight, and returns once every one
// was answered 200.
func (t *relpTransport) Send(ctx context.Context, msgs [][]byte) error {
	if t.err != nil {
		return t.err
	}
	stop := context.AfterFunc(ctx, func() { t.c.SetDeadline(time.Now()) })
	defer stop()
	txnrs := make([]uint32, len(msgs))
	sent, acked := 0, 0
	for acked < len(msgs) {
		for sent < len(msgs) && sent-acked < t.window {
			txnrs[sent] = t.next()
			t.frame(txnrs[sent], "syslog", msgs[sent])
			sent++
		}
		if err := t.w.Flush(); err != nil {
			t.err = err
			return err
		}
		// Read every answer already here, and at least one.
		for {
			t.c.SetReadDeadline(time.Now().Add(relpAckTimeout))
			code, text, err := t.reply(txnrs[acked])
			if err != nil {
				t.err = err
				return err
			}
			if code != 200 {
				t.err = &RELPError{Txnr: txnrs[acked], Code: code, Text: text}
				return t.err
			}
			acked++
			if acked == sent || t.r.Buffered() == 0 {
				break
			}
		}
	}
	return nil
}

func (t *relpTransport) Settle() time.Duration { return 0 }
func (t *relpTransport) Healthy() error        { return t.err }

// Close ends the session with "close" (its answer is awaited briefly) and closes the connection.
func (t *relpTransport) Close() error {
	if t.err == nil {
		n := t.next()
		t.frame(n, "close", nil)
		if t.w.Flush() == nil {
			t.c.SetReadDeadline(time.Now().Add(time.Second))
			t.reply(n)
		}
	}
	return t.c.Close()
}
