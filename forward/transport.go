package forward

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/auditarch/auditarch/internal/durable"
)

// dialer returns how a sink of cfg connects.
func dialer(cfg SinkConfig) (func(ctx context.Context) (Transport, error), error) {
	switch cfg.Type {
	case SinkFile:
		return func(context.Context) (Transport, error) { return openFileTransport(cfg.Address, cfg.MaxSize, cfg.Keep) }, nil
	case SinkStdout:
		return func(context.Context) (Transport, error) { return &fileTransport{f: os.Stdout, stdout: true}, nil }, nil
	case SinkSyslogUDP:
		return func(ctx context.Context) (Transport, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "udp", cfg.Address)
			if err != nil {
				return nil, err
			}
			return &udpTransport{c: c}, nil
		}, nil
	}
	var tc *tls.Config
	if cfg.Type == SinkSyslogTLS || cfg.TLS.Enable {
		var err error
		if tc, err = clientTLS(cfg.TLS, cfg.Address); err != nil {
			return nil, err
		}
	}
	relp := cfg.Type == SinkRELP
	return func(ctx context.Context) (Transport, error) {
		c, err := dialStream(ctx, cfg.Address, tc)
		if err != nil {
			return nil, err
		}
		if relp {
			return openRELP(c, cfg.Batch)
		}
		return newStreamTransport(c, cfg.Settle), nil
	}, nil
}

// clientTLS builds the TLS client configuration of t for a server at addr.
func clientTLS(t TLSConfig, addr string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if c.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("tls: address %q: %w", addr, err)
		}
		c.ServerName = host
	}
	if t.Cert != "" || t.Key != "" {
		cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, fmt.Errorf("tls client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	switch {
	case t.Pin != "":
		want, err := hex.DecodeString(strings.ReplaceAll(t.Pin, ":", ""))
		if err != nil || len(want) != sha256.Size {
			return nil, fmt.Errorf("tls pin %q: want the hex SHA-256 of the server's SubjectPublicKeyInfo", t.Pin)
		}
		c.InsecureSkipVerify = true // the server is pinned by its key below, not by a CA
		c.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("tls: the server sent no certificate")
			}
			cert, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			got := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
			if string(got[:]) != string(want) {
				return fmt.Errorf("%w: the server's key is sha256 %x", ErrPin, got)
			}
			return nil
		}
	case t.CA != "":
		pem, err := os.ReadFile(t.CA)
		if err != nil {
			return nil, fmt.Errorf("tls ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls ca %s: no PEM certificate", t.CA)
		}
		c.RootCAs = pool
	default:
		return nil, errors.New("tls: name the server's CA (tls.ca) or pin its key (tls.pin)")
	}
	return c, nil
}

// ErrPin is wrapped when a server does not present the pinned key.
var ErrPin = errors.New("not the pinned server key")

// SPKIPin returns the pin of the first certificate in a PEM file's bytes: the hex SHA-256 of its
// SubjectPublicKeyInfo (what TLSConfig.Pin takes).
func SPKIPin(certPEM []byte) (string, error) {
	for rest := certPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return "", errors.New("no certificate in PEM")
		}
		if b.Type == "CERTIFICATE" {
			return spki(b.Bytes)
		}
	}
}

func spki(der []byte) (string, error) {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return "", err
	}
	s := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(s[:]), nil
}

func dialStream(ctx context.Context, addr string, tc *tls.Config) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, KeepAlive: 5 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if tc == nil {
		return raw, nil
	}
	c := tls.Client(raw, tc)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("tls: %w", err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// fileTransport appends lines to a file (fsynced before Send returns) or to standard output.
type fileTransport struct {
	f       *os.File
	stdout  bool
	path    string
	size    int64
	maxSize int64
	keep    int
	w       *bufio.Writer
}

func openFileTransport(path string, maxSize int64, keep int) (*fileTransport, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &fileTransport{f: f, path: path, size: fi.Size(), maxSize: maxSize, keep: keep}, nil
}

func (t *fileTransport) Send(_ context.Context, msgs [][]byte) error {
	if t.w == nil {
		t.w = bufio.NewWriterSize(t.f, 256<<10)
	}
	for _, m := range msgs {
		if !t.stdout && t.size > 0 && t.size+int64(len(m))+1 > t.maxSize {
			if err := t.rotate(); err != nil {
				return err
			}
		}
		t.w.Write(m)
		t.w.WriteByte('\n')
		t.size += int64(len(m)) + 1
	}
	if err := t.w.Flush(); err != nil {
		return err
	}
	if t.stdout {
		return nil // a pipe or a terminal: nothing to fsync
	}
	return t.f.Sync()
}

// rotate makes the current file path.1 (path.1 path.2 and so on, keeping keep files) and starts a new one.
func (t *fileTransport) rotate() error {
	if err := t.w.Flush(); err != nil {
		return err
	}
	if err := t.f.Sync(); err != nil {
		return err
	}
	t.f.Close()
	os.Remove(fmt.Sprintf("%s.%d", t.path, t.keep))
	for k := t.keep - 1; k >= 1; k-- {
		os.Rename(fmt.Sprintf("%s.%d", t.path, k), fmt.Sprintf("%s.%d", t.path, k+1))
	}
	if err := os.Rename(t.path, t.path+".1"); err != nil {
		return err
	}
	f, err := os.OpenFile(t.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	t.f, t.size = f, 0
	t.w.Reset(f)
	return durable.SyncDir(filepath.Dir(t.path))
}

func (t *fileTransport) Settle() time.Duration { return 0 }
func (t *fileTransport) Healthy() error        { return nil }
func (t *fileTransport) Close() error {
	if t.stdout {
		return nil
	}
	return t.f.Close()
}

// streamTransport writes RFC 5425 / RFC 6587 octet-counted frames ("LEN SP MSG") to a TCP or TLS
// connection. Syslog has no acknowledgement: a reader notices when the receiver closes the connection.
type streamTransport struct {
	c      net.Conn
	w      *bufio.Writer
	settle time.Duration
	mu     sync.Mutex
	err    error
}

func newStreamTransport(c net.Conn, settle time.Duration) *streamTransport {
	t := &streamTransport{c: c, w: bufio.NewWriterSize(c, 256<<10), settle: settle}
	go func() {
		// The receiver sends nothing: any byte or the end of the stream is the end of the connection.
		_, err := c.Read(make([]byte, 1))
		if err == nil {
			err = errors.New("the syslog receiver sent data")
		}
		t.mu.Lock()
		t.err = fmt.Errorf("connection lost: %w", err)
		t.mu.Unlock()
	}()
	return t
}

func (t *streamTransport) Send(_ context.Context, msgs [][]byte) error {
	if err := t.Healthy(); err != nil {
		return err
	}
	t.c.SetWriteDeadline(time.Now().Add(30 * time.Second))
	var n [20]byte
	for _, m := range msgs {
		t.w.Write(strconv.AppendInt(n[:0], int64(len(m)), 10))
		t.w.WriteByte(' ')
		t.w.Write(m)
	}
	return t.w.Flush()
}

func (t *streamTransport) Settle() time.Duration { return t.settle }
func (t *streamTransport) Healthy() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}
func (t *streamTransport) Close() error { return t.c.Close() }

// udpTransport sends one datagram per message (RFC 5426). Nothing is acknowledged or noticed lost.
type udpTransport struct{ c net.Conn }

func (t *udpTransport) Send(_ context.Context, msgs [][]byte) error {
	for _, m := range msgs {
		if _, err := t.c.Write(m); err != nil {
			return err
		}
	}
	return nil
}
func (t *udpTransport) Settle() time.Duration { return 0 }
func (t *udpTransport) Healthy() error        { return nil }
func (t *udpTransport) Close() error          { return t.c.Close() }

var _ io.Closer = (*fileTransport)(nil)
