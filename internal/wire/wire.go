// Package wire is the shipping protocol between a host (package forward) and the store (package store),
// described in docs/format.md, "Shipping protocol v1".
//
// It runs over TLS 1.3 with certificates on both sides that are self-signed and carry an Ed25519 key: the
// host's identity key (the one that signs its archive) and the store's receipt key. Each side pins the
// other's key; no CA is involved. Frames are u8 type, u32 little-endian payload length, payload.
//
// The host sends HELLO, the store answers STATE (how much of the host's archive it holds, durably), and
// the host then sends DATA frames: bytes of its segment files, byte for byte, continuing from STATE. The
// store acknowledges cumulatively (ACK with the highest DATA sequence number it has verified and fsynced)
// and attaches a receipt whenever the bytes completed a checkpoint. ERROR ends a connection.
package wire

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"time"

	"github.com/auditarch/auditarch/archive"
)

// Frame types.
const (
	Hello byte = 1 // host → store, JSON HelloMsg
	Data  byte = 2 // host → store, see AppendData
	State byte = 3 // store → host, JSON StateMsg
	Ack   byte = 4 // store → host, JSON AckMsg
	Error byte = 5 // either way, JSON ErrorMsg; the sender closes the connection after it
)

// Version is the protocol version HELLO names.
const Version = 1

// MaxFrame is the largest payload either side accepts. DATA frames carry at most MaxData bytes of a file.
const (
	MaxFrame = 8 << 20
	MaxData  = 4 << 20
)

// HelloMsg opens a connection.
type HelloMsg struct {
	Version int    `json:"version"`
	Origin  string `json:"origin"` // the host's origin (its identity key's name)
}

// StateMsg is the store's durable position in the host's archive: it holds every segment file before
// Segment in full and Offset bytes of Segment. Segment is empty when it holds nothing.
type StateMsg struct {
	Segment string `json:"segment"`
	Offset  int64  `json:"offset"`
	Size    uint64 `json:"size"`              // leaves those bytes complete
	Receipt string `json:"receipt,omitempty"` // the latest receipt, if any
}

// AckMsg acknowledges every DATA frame up to Seq: verified and durable on the store.
type AckMsg struct {
	Seq     uint64 `json:"seq"`
	Segment string `json:"segment"`
	Offset  int64  `json:"offset"`
	Size    uint64 `json:"size"`
	// Receipt is the store's cosignature of the latest checkpoint the acknowledged bytes completed
	// (docs/format.md, "Receipts"); empty when they completed none.
	Receipt string `json:"receipt,omitempty"`
}

// ErrorMsg says why a connection ends. Code is one of the Code constants.
type ErrorMsg struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// ERROR codes (docs/format.md, "Shipping protocol v1").
const (
	CodeProtocol    = "protocol"     // a frame out of order, malformed, or of another version
	CodeUnknownHost = "unknown-host" // HELLO names another host than the certificate's
	CodeReplay      = "replay"       // bytes identical to those the store holds
	CodeFork        = "fork"         // bytes that differ from those the store holds (kept as evidence)
	CodeTampered    = "tampered"     // bytes that do not verify (kept as evidence)
	CodeGap         = "gap"          // bytes beyond the end of the store's copy
	CodeStorage     = "storage"      // the store cannot read or write the host's area
	CodeQuota       = "quota"        // the host's area is at its limit of segment files
)

// RemoteError is an ERROR frame received from the peer.
type RemoteError struct{ ErrorMsg }

func (e *RemoteError) Error() string { return fmt.Sprintf("peer refused: %s: %s", e.Code, e.Message) }

// WriteFrame writes one frame (buffered: the caller flushes).
func WriteFrame(w *bufio.Writer, typ byte, payload []byte) error {
	var h [5]byte
	h[0] = typ
	binary.LittleEndian.PutUint32(h[1:], uint32(len(payload)))
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

// WriteJSON writes a frame whose payload is v as JSON.
func WriteJSON(w *bufio.Writer, typ byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return WriteFrame(w, typ, b)
}

// ReadFrame reads one frame into buf (grown as needed) and returns its type and payload.
//
// The length is checked against MaxFrame before anything is allocated, and a payload larger than buf is
// read in pieces into a buffer that grows (doubling, from readChunk) only as its bytes arrive: a header
// that claims 8 MiB followed by 3 bytes costs readChunk, not 8 MiB. Whatever the input, ReadFrame
// allocates at most readChunk plus 4 times the payload bytes it read (each new buffer is allocated only
// once the one before is full, and is at most twice its size).
func ReadFrame(r *bufio.Reader, buf []byte) (byte, []byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.LittleEndian.Uint32(h[1:]))
	if n > MaxFrame {
		return 0, nil, fmt.Errorf("frame of %d bytes exceeds the %d-byte limit", n, MaxFrame)
	}
	if cap(buf) >= n {
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			return 0, nil, cutShort(err)
		}
		return h[0], buf, nil
	}
	buf = buf[:0]
	for len(buf) < n {
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), min(max(2*cap(buf), readChunk), n))
			copy(nb, buf)
			buf = nb
		}
		m, err := io.ReadFull(r, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err != nil {
			return 0, nil, cutShort(err)
		}
	}
	return h[0], buf, nil
}

// cutShort is the error of a payload that ends early: io.ErrUnexpectedEOF even when none of it came.
func cutShort(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("frame cut short: %w", err)
}

// readChunk is the first piece ReadFrame allocates for a payload larger than the buffer it is given.
const readChunk = 64 << 10

// AppendData appends a DATA payload: u64 seq, u16 name length, name, u64 offset, the bytes.
func AppendData(b []byte, seq uint64, name string, off int64, data []byte) []byte {
	b = binary.LittleEndian.AppendUint64(b, seq)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(name)))
	b = append(b, name...)
	b = binary.LittleEndian.AppendUint64(b, uint64(off))
	return append(b, data...)
}

// ParseData splits a DATA payload. data aliases p. The name must be a segment file name as the writer
// makes them (docs/format.md, "Directory": seg-<20 digits>-<20060102T150405Z>.aseg): the store opens it in
// the host's area, so a path ("../other-host/…") or any other file name is refused here.
func ParseData(p []byte) (seq uint64, name string, off int64, data []byte, err error) {
	if len(p) < 10 {
		return 0, "", 0, nil, errors.New("DATA frame too short")
	}
	seq = binary.LittleEndian.Uint64(p)
	n := int(binary.LittleEndian.Uint16(p[8:]))
	p = p[10:]
	if len(p) < n+8 || n == 0 || n > 255 {
		return 0, "", 0, nil, errors.New("DATA frame: bad segment name")
	}
	name = string(p[:n])
	if !isSegmentName(name) {
		return 0, "", 0, nil, fmt.Errorf("DATA frame: %q is not a segment file name", name)
	}
	off = int64(binary.LittleEndian.Uint64(p[n:]))
	data = p[n+8:]
	if off < 0 || len(data) > MaxData {
		return 0, "", 0, nil, errors.New("DATA frame: bad offset or length")
	}
	return seq, name, off, data, nil
}

// isSegmentName reports whether name has the form of a segment file name (and so is no path).
func isSegmentName(name string) bool {
	_, ok := archive.ParseSegmentName(name)
	return ok
}

// Certificate returns a self-signed TLS certificate for key, named cn. Only its key matters: the peer
// pins the key, not a name or a CA.
func Certificate(key ed25519.PrivateKey, cn string) (tls.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(100 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"auditarch-store"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// PeerKey returns the Ed25519 key of the first certificate in rawCerts (what VerifyPeerCertificate gets).
func PeerKey(rawCerts [][]byte) (ed25519.PublicKey, error) {
	if len(rawCerts) == 0 {
		return nil, errors.New("no certificate")
	}
	c, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	k, ok := c.PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, errors.New("certificate key is not Ed25519")
	}
	// A self-signed certificate must be signed by its own key: the peer holds the private half.
	if err := c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature); err != nil {
		return nil, fmt.Errorf("certificate is not self-signed by its key: %w", err)
	}
	return k, nil
}
