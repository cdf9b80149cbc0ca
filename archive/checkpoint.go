package archive

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Checkpoint is a commitment to the first Size leaves of a host's tree, in the C2SP tlog-checkpoint text
// form: origin line, decimal size line, base64 root hash line. It travels as a signed note.
type Checkpoint struct {
	Origin string
	Size   uint64
	Root   tlog.Hash
}

// Text returns the checkpoint body that is signed.
func (c Checkpoint) Text() string {
	return fmt.Sprintf("%s\n%d\n%s\n", c.Origin, c.Size, base64.StdEncoding.EncodeToString(c.Root[:]))
}

// ParseCheckpoint parses a checkpoint body (the note text, without signatures).
func ParseCheckpoint(text string) (Checkpoint, error) {
	var c Checkpoint
	if !strings.HasSuffix(text, "\n") {
		return c, errors.New("checkpoint does not end with a newline")
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) < 3 {
		return c, errors.New("checkpoint has fewer than 3 lines")
	}
	if len(lines) > 3 {
		return c, errors.New("checkpoint has unexpected extension lines")
	}
	if lines[0] == "" {
		return c, errors.New("checkpoint has an empty origin")
	}
	c.Origin = lines[0]
	size, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil || strconv.FormatUint(size, 10) != lines[1] {
		return c, fmt.Errorf("checkpoint size %q is not a decimal number", lines[1])
	}
	c.Size = size
	root, err := DecodeBase64(lines[2])
	if err != nil || len(root) != tlog.HashSize {
		return c, errors.New("checkpoint root is not a base64 SHA-256 hash")
	}
	copy(c.Root[:], root)
	return c, nil
}

// DecodeBase64 decodes padded standard base64 in its one canonical form: Strict still skips CR and LF.
func DecodeBase64(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, errors.New("line break in base64")
	}
	return base64.StdEncoding.Strict().DecodeString(s)
}

// SignCheckpoint returns the signed note of c.
func SignCheckpoint(c Checkpoint, s note.Signer) ([]byte, error) {
	return note.Sign(&note.Note{Text: c.Text()}, s)
}

// OpenCheckpoint parses a signed checkpoint and checks that v signed it. A note that v did not sign gives
// an error wrapping ErrSignature (with the checkpoint, when its body parses); note.Open alone would only
// list an unknown signer as unverified.
func OpenCheckpoint(msg []byte, v note.Verifier) (Checkpoint, error) {
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		var un *note.UnverifiedNoteError
		if errors.As(err, &un) {
			c, perr := ParseCheckpoint(un.Note.Text)
			if perr != nil {
				return c, perr
			}
			return c, fmt.Errorf("%w: not signed by %s key %08x", ErrSignature, v.Name(), v.KeyHash())
		}
		var inv *note.InvalidSignatureError
		if errors.As(err, &inv) {
			return Checkpoint{}, fmt.Errorf("%w: %v", ErrSignature, err)
		}
		return Checkpoint{}, fmt.Errorf("malformed signed checkpoint: %w", err)
	}
	ok := false
	for _, s := range n.Sigs {
		if s.Name == v.Name() && s.Hash == v.KeyHash() {
			ok = true
		}
	}
	if !ok {
		return Checkpoint{}, fmt.Errorf("%w: not signed by %s key %08x", ErrSignature, v.Name(), v.KeyHash())
	}
	return ParseCheckpoint(n.Text)
}

// ErrSignature is wrapped when a checkpoint is not signed by the key that must sign it.
var ErrSignature = errors.New("bad signature")

// PeekCheckpoint parses a signed checkpoint's body without checking any signature.
func PeekCheckpoint(msg []byte) (Checkpoint, error) {
	s := string(msg)
	i := strings.Index(s, "\n\n")
	if i < 0 {
		return Checkpoint{}, errors.New("malformed signed checkpoint: no signature block")
	}
	return ParseCheckpoint(s[:i+1])
}
