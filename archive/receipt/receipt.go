// Package receipt holds store receipts: the store acknowledges a checkpoint it holds by cosigning it
// (C2SP tlog-cosignature, https://c2sp.org/tlog-cosignature, Ed25519 cosignature/v1), and a host keeps
// the receipts it was sent in its archive directory. The format is written down in docs/format.md,
// "Receipts".
package receipt

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/internal/keyfile"
	"golang.org/x/mod/sumdb/note"
)

// Store key files written by CosignerKeygen, and the receipts file of an archive directory.
const (
	StoreKeyFile = "store.key" // cosigner private key, 0600
	StorePubFile = "store.pub" // cosigner verifier key: what a verifier pins (verify --store-key)
	ReceiptsFile = "receipts"  // in an archive directory: the store's receipts, framed as Read reads them
)

const (
	cosignAlg    = 0x04               // signed-note signature type of an Ed25519 cosignature/v1
	cosignHeader = "cosignature/v1\n" // first line of the signed message (domain separation)
	// cosigSize is a cosignature's decoded length after the key ID: u64 timestamp and an Ed25519 signature.
	cosigSize = 8 + ed25519.SignatureSize
	// MaxReceiptSize bounds one receipt in a receipts file: a checkpoint with its signature lines.
	MaxReceiptSize = 64 << 10
	receiptFrame   = "receipt " // a receipts file's record header: "receipt <length>\n"
)

// Cosigner is the store's key: it cosigns the host checkpoints the store holds, which makes them receipts.
type Cosigner struct {
	name string
	id   uint32
	priv ed25519.PrivateKey
	vkey string
}

// CosignVerifier checks the store's cosignatures. It is a note.Verifier for cosignature/v1 signature lines:
// Verify takes the signature bytes after the key ID (timestamp and Ed25519 signature).
type CosignVerifier struct {
	name string
	id   uint32
	pub  ed25519.PublicKey
}

var _ note.Verifier = (*CosignVerifier)(nil)

// Receipt is a receipt whose cosignature verified: the store held the checkpoint at Time.
type Receipt struct {
	Checkpoint archive.Checkpoint
	Time       time.Time // the cosignature's timestamp (whole seconds, UTC)
}

// cosignKeyID is the key ID of an Ed25519 cosigner: SHA-256(name || "\n" || 0x04 || pub)[:4], big endian.
func cosignKeyID(name string, pub ed25519.PublicKey) uint32 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte{'\n', cosignAlg})
	h.Write(pub)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

// validKeyName reports whether name can name a note key: non-empty UTF-8, no spaces, no '+'.
func validKeyName(name string) bool {
	return name != "" && utf8.ValidString(name) && strings.IndexFunc(name, unicode.IsSpace) < 0 && !strings.Contains(name, "+")
}

func cosignVKey(name string, pub ed25519.PublicKey) string {
	return fmt.Sprintf("%s+%08x+%s", name, cosignKeyID(name, pub), base64.StdEncoding.EncodeToString(append([]byte{cosignAlg}, pub...)))
}

// GenerateCosignerKey returns a new store key pair named name: the private key
// "PRIVATE+KEY+<name>+<key ID hex>+<base64(0x04 || seed)>" and the verifier key
// "<name>+<key ID hex>+<base64(0x04 || public key)>".
func GenerateCosignerKey(name string) (skey, vkey string, err error) {
	if !validKeyName(name) {
		return "", "", fmt.Errorf("invalid key name %q: it must be non-empty, without spaces or '+'", name)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generate store key: %w", err)
	}
	skey = fmt.Sprintf("PRIVATE+KEY+%s+%08x+%s", name, cosignKeyID(name, pub),
		base64.StdEncoding.EncodeToString(append([]byte{cosignAlg}, priv.Seed()...)))
	return skey, cosignVKey(name, pub), nil
}

// parseCosignKey splits "<name>+<hex8>+<base64>" and decodes it: the name, the key ID and the key bytes
// after the 0x04 type byte, which must be size long.
func parseCosignKey(key string, size int) (name string, id uint32, raw []byte, err error) {
	name, rest, ok1 := strings.Cut(key, "+")
	hash, b64, ok2 := strings.Cut(rest, "+")
	if !ok1 || !ok2 || !validKeyName(name) {
		return "", 0, nil, errors.New("malformed key: want name+keyid+base64")
	}
	h, err := strconv.ParseUint(hash, 16, 32)
	if err != nil || len(hash) != 8 {
		return "", 0, nil, errors.New("malformed key: the key ID is not 8 hex digits")
	}
	raw, err = archive.DecodeBase64(b64)
	if err != nil || len(raw) != 1+size || raw[0] != cosignAlg {
		return "", 0, nil, errors.New("not an Ed25519 cosignature/v1 key (type 0x04)")
	}
	return name, uint32(h), raw[1:], nil
}

// NewCosigner parses a store private key (GenerateCosignerKey's skey).
func NewCosigner(skey string) (*Cosigner, error) {
	rest, ok := strings.CutPrefix(skey, "PRIVATE+KEY+")
	if !ok {
		return nil, errors.New("not a private key: want PRIVATE+KEY+name+keyid+base64")
	}
	name, id, seed, err := parseCosignKey(rest, ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	if cosignKeyID(name, pub) != id {
		return nil, fmt.Errorf("private key's ID %08x does not match its key", id)
	}
	return &Cosigner{name: name, id: id, priv: priv, vkey: cosignVKey(name, pub)}, nil
}

// VerifierKey returns the verifier key of c, for NewCosignVerifier.
func (c *Cosigner) VerifierKey() string { return c.vkey }

// Cosign returns checkpoint (a signed note from the host, as the host sent it) with the store's
// cosignature line appended, timestamped t (whole seconds): a receipt. The signed message is
// "cosignature/v1\n", "time <t in unix seconds>\n" and the note body. Cosign checks that checkpoint is a well-formed signed
// checkpoint that c has not cosigned yet; checking the host's signature, and the checkpoint's consistency
// with what the store held before, is the caller's part.
func (c *Cosigner) Cosign(checkpoint []byte, t time.Time) ([]byte, error) {
	if t.Unix() < 0 {
		return nil, fmt.Errorf("cosign: time %s is before 1970", t)
	}
	self := &CosignVerifier{name: c.name, id: c.id, pub: c.priv.Public().(ed25519.PublicKey)}
	// Only the store's own line can verify: a note with none is the expected UnverifiedNoteError.
	_, err := note.Open(checkpoint, note.VerifierList(self))
	var un *note.UnverifiedNoteError
	switch {
	case err == nil, errors.As(err, new(*note.InvalidSignatureError)):
		return nil, fmt.Errorf("cosign: the checkpoint already carries a signature line of %s", self.keyName())
	case !errors.As(err, &un):
		return nil, fmt.Errorf("cosign: malformed signed checkpoint: %w", err)
	}
	body := un.Note.Text
	if _, err := archive.ParseCheckpoint(body); err != nil {
		return nil, fmt.Errorf("cosign: %w", err)
	}
	ts := uint64(t.Unix())
	sig := make([]byte, 4, 4+cosigSize)
	binary.BigEndian.PutUint32(sig, c.id)
	sig = binary.BigEndian.AppendUint64(sig, ts)
	sig = append(sig, ed25519.Sign(c.priv, cosignMessage(ts, body))...)
	out := bytes.Clone(checkpoint)
	out = fmt.Appendf(out, "— %s %s\n", c.name, base64.StdEncoding.EncodeToString(sig))
	return out, nil
}

// cosignMessage is the message an Ed25519 cosignature/v1 signs: a header line, the time line and the
// whole note body.
func cosignMessage(ts uint64, body string) []byte {
	return []byte(cosignHeader + "time " + strconv.FormatUint(ts, 10) + "\n" + body)
}

// NewCosignVerifier parses a store verifier key (GenerateCosignerKey's vkey, store.pub).
func NewCosignVerifier(vkey string) (*CosignVerifier, error) {
	name, id, pub, err := parseCosignKey(vkey, ed25519.PublicKeySize)
	if err != nil {
		return nil, err
	}
	if cosignKeyID(name, pub) != id {
		return nil, fmt.Errorf("verifier key's ID %08x does not match its key", id)
	}
	return &CosignVerifier{name: name, id: id, pub: pub}, nil
}

// Name returns the store key's name.
func (v *CosignVerifier) Name() string { return v.name }

// KeyHash returns the store key's ID.
func (v *CosignVerifier) KeyHash() uint32 { return v.id }

// Verify reports whether sig (timestamp and Ed25519 signature, after the key ID) is the store's
// cosignature of the note body msg.
func (v *CosignVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != cosigSize {
		return false
	}
	ts := binary.BigEndian.Uint64(sig)
	if ts > math.MaxInt64 {
		return false
	}
	return ed25519.Verify(v.pub, cosignMessage(ts, string(msg)), sig[8:])
}

// String returns the verifier key, name+keyid+base64.
func (v *CosignVerifier) String() string { return cosignVKey(v.name, v.pub) }

// keyName names the key in messages: name+keyid.
func (v *CosignVerifier) keyName() string { return fmt.Sprintf("%s+%08x", v.name, v.id) }

// ErrReceipt is wrapped when a receipt does not carry a valid cosignature by the pinned store key.
var ErrReceipt = errors.New("receipt is not signed by the pinned store key")

// Open checks the store's cosignature on receipt and returns the checkpoint it covers and the time
// in it. It does not check the host's signature: verify.Dir checks the checkpoint against the archive. A
// receipt without exactly one valid cosignature by store gives an error wrapping ErrReceipt.
func Open(receipt []byte, store *CosignVerifier) (archive.Checkpoint, time.Time, error) {
	n, err := note.Open(receipt, note.VerifierList(store))
	if err != nil {
		var un *note.UnverifiedNoteError
		var inv *note.InvalidSignatureError
		switch {
		case errors.As(err, &un):
			return archive.Checkpoint{}, time.Time{}, fmt.Errorf("%w %s: it carries no cosignature by that key", ErrReceipt, store.keyName())
		case errors.As(err, &inv):
			return archive.Checkpoint{}, time.Time{}, fmt.Errorf("%w %s: its cosignature does not verify", ErrReceipt, store.keyName())
		}
		return archive.Checkpoint{}, time.Time{}, fmt.Errorf("malformed receipt: %w", err)
	}
	// note.Open verifies the first line of a key and skips the others: a receipt has one time.
	if k := countSigs(receipt, store); k != 1 {
		return archive.Checkpoint{}, time.Time{}, fmt.Errorf("%w %s: it carries %d cosignatures by that key, not one", ErrReceipt, store.keyName(), k)
	}
	sig, err := base64.StdEncoding.DecodeString(n.Sigs[0].Base64)
	if err != nil || len(sig) != 4+cosigSize {
		return archive.Checkpoint{}, time.Time{}, fmt.Errorf("malformed receipt: cosignature of %d bytes", len(sig))
	}
	c, err := archive.ParseCheckpoint(n.Text)
	if err != nil {
		return archive.Checkpoint{}, time.Time{}, fmt.Errorf("receipt: %w", err)
	}
	return c, time.Unix(int64(binary.BigEndian.Uint64(sig[4:])), 0).UTC(), nil
}

// countSigs counts the signature lines of a well-formed note that name v's key.
func countSigs(msg []byte, v note.Verifier) int {
	block := msg[bytes.LastIndex(msg, []byte("\n\n"))+2:]
	prefix := "— " + v.Name() + " "
	k := 0
	for _, line := range strings.Split(strings.TrimSuffix(string(block), "\n"), "\n") {
		b64, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		if sig, err := base64.StdEncoding.DecodeString(b64); err == nil && len(sig) >= 4 && binary.BigEndian.Uint32(sig) == v.KeyHash() {
			k++
		}
	}
	return k
}

// Append writes receipt to f as one record of a receipts file: the line "receipt <length>\n",
// then the receipt's bytes (which end with a newline). Both go out in one write, so f should be opened
// with O_APPEND, by f's only writer. A write cut short (a full disk) is undone: the file is truncated
// back to where the record began, so that the next record does not follow a torn one. The caller
// decides when to fsync.
func Append(f *os.File, receipt []byte) error {
	if len(receipt) == 0 || len(receipt) > MaxReceiptSize || receipt[len(receipt)-1] != '\n' {
		return fmt.Errorf("append receipt: a receipt of %d bytes must be 1..%d bytes ending with a newline", len(receipt), MaxReceiptSize)
	}
	rec := make([]byte, 0, len(receiptFrame)+8+len(receipt))
	rec = fmt.Appendf(rec, "%s%d\n", receiptFrame, len(receipt))
	rec = append(rec, receipt...)
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("append receipt: %w", err)
	}
	if n, err := f.Write(rec); err != nil {
		if n > 0 {
			if terr := f.Truncate(fi.Size()); terr != nil {
				return fmt.Errorf("append receipt: %w (the partial record at offset %d stays: %v)", err, fi.Size(), terr)
			}
		}
		return fmt.Errorf("append receipt: %w", err)
	}
	return nil
}

// Read reads the receipts file at path (records as Append writes them) and returns, in file
// order, the receipts whose cosignature by store verifies, and the number of records that do not (another
// key, a bad signature, or not a signed checkpoint). A record header that is not "receipt <length>" gives a
// *CorruptError; so does a file that ends inside a record (Torn set: the writer stopped mid-append), with
// the receipts before it. Cost: one Ed25519 verification per record.
func Read(path string, store *CosignVerifier) (receipts []Receipt, bad int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("read receipts: %w", err)
	}
	defer f.Close()
	br := bufio.NewReader(f)
	var off int64
	corrupt := func(torn bool, format string, args ...any) error {
		return &archive.CorruptError{Path: path, Offset: off, Reason: fmt.Sprintf(format, args...), Torn: torn}
	}
	var buf []byte
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case err == io.EOF && len(line) == 0:
			return receipts, bad, nil
		case err == io.EOF && tornHeader(string(line)):
			return receipts, bad, corrupt(true, "the file ends inside a receipt's header line")
		case err != nil && err != io.EOF && !errors.Is(err, bufio.ErrBufferFull):
			return receipts, bad, fmt.Errorf("read receipts: %w", err)
		}
		ns, ok := strings.CutPrefix(strings.TrimSuffix(string(line), "\n"), receiptFrame)
		size, perr := strconv.Atoi(ns)
		if err != nil || !ok || perr != nil || strconv.Itoa(size) != ns || size < 1 || size > MaxReceiptSize {
			return receipts, bad, corrupt(false, "not a receipt header (want \"receipt <length>\", length 1..%d)", MaxReceiptSize)
		}
		if cap(buf) < size {
			buf = make([]byte, size)
		}
		buf = buf[:size]
		if _, err := io.ReadFull(br, buf); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return receipts, bad, corrupt(true, "the file ends inside a receipt of %d bytes", size)
			}
			return receipts, bad, fmt.Errorf("read receipts: %w", err)
		}
		off += int64(len(line) + size)
		c, t, err := Open(buf, store)
		if err != nil {
			bad++
			continue
		}
		receipts = append(receipts, Receipt{Checkpoint: c, Time: t})
	}
}

// tornHeader reports whether line, the end of a receipts file without a newline, is the beginning of a
// record header.
func tornHeader(line string) bool {
	if len(line) <= len(receiptFrame) {
		return strings.HasPrefix(receiptFrame, line)
	}
	n, ok := strings.CutPrefix(line, receiptFrame)
	return ok && strings.Trim(n, "0123456789") == ""
}

// Newest returns the receipt for the largest tree (of those, the latest). ok is false when there
// is none.
func Newest(receipts []Receipt) (r Receipt, ok bool) {
	for i, x := range receipts {
		if i == 0 || x.Checkpoint.Size > r.Checkpoint.Size || x.Checkpoint.Size == r.Checkpoint.Size && x.Time.After(r.Time) {
			r = x
		}
	}
	return r, len(receipts) > 0
}

// CosignerKeygen writes a new store key pair named name into dir (created 0700): store.key (0600) and
// store.pub. It refuses to overwrite.
func CosignerKeygen(dir, name string) (vkey string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create key directory: %w", err)
	}
	if err := keyfile.CheckPrivate(dir); err != nil {
		return "", err
	}
	skey, vkey, err := GenerateCosignerKey(name)
	if err != nil {
		return "", err
	}
	if err := keyfile.WriteNew(filepath.Join(dir, StoreKeyFile), skey+"\n", 0o600); err != nil {
		return "", err
	}
	if err := keyfile.WriteNew(filepath.Join(dir, StorePubFile), vkey+"\n", 0o644); err != nil {
		return "", err
	}
	return vkey, nil
}

// LoadCosigner reads the store's private key file. The file must be 0600 (or stricter) and its directory
// 0700: a key others can read acknowledges nothing.
func LoadCosigner(path string) (*Cosigner, error) {
	skey, err := keyfile.ReadPrivate(path, "store key")
	if err != nil {
		return nil, err
	}
	c, err := NewCosigner(skey)
	if err != nil {
		return nil, fmt.Errorf("store key %s: %w", path, err)
	}
	return c, nil
}

// LoadCosignVerifier reads a store verifier key file (store.pub).
func LoadCosignVerifier(path string) (*CosignVerifier, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read store public key: %w", err)
	}
	v, err := NewCosignVerifier(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, fmt.Errorf("store public key %s: %w", path, err)
	}
	return v, nil
}

// TLSKey returns the store key for TLS: the store's certificate carries it, and hosts pin it.
func (c *Cosigner) TLSKey() ed25519.PrivateKey { return c.priv }

// PublicKey returns the store key's Ed25519 public key (what a host's TLS client pins).
func (v *CosignVerifier) PublicKey() ed25519.PublicKey { return v.pub }

// Last returns the last intact receipt of the receipts file at path (a shipper appends only receipts
// for larger trees, so it is the newest) with its bytes, and whether its cosignature by store verifies.
// ok is false when the file holds no complete receipt; a receipt that does not open under store is an
// error wrapping ErrReceipt. It reads the whole file but verifies one signature.
func Last(path string, store *CosignVerifier) (rc Receipt, text []byte, ok bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return rc, nil, false, nil
	}
	if err != nil {
		return rc, nil, false, fmt.Errorf("read receipts: %w", err)
	}
	defer f.Close()
	br := bufio.NewReader(f)
	var buf []byte
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			break // the end, or a torn header: the receipts before it stand
		}
		ns, okf := strings.CutPrefix(strings.TrimSuffix(string(line), "\n"), receiptFrame)
		size, perr := strconv.Atoi(ns)
		if !okf || perr != nil || strconv.Itoa(size) != ns || size < 1 || size > MaxReceiptSize {
			break // damage: what came before stands
		}
		rec := make([]byte, size)
		if _, err := io.ReadFull(br, rec); err != nil {
			break
		}
		buf = rec
	}
	if buf == nil {
		return rc, nil, false, nil
	}
	c, t, err := Open(buf, store)
	if err != nil {
		return rc, nil, false, err
	}
	return Receipt{Checkpoint: c, Time: t}, buf, true, nil
}
