package writer

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"

	"golang.org/x/mod/sumdb/note"
)

// epochKey is a short-lived Ed25519 key that lives only in memory. It implements note.Signer so that the
// private key is never serialised; Erase zeroes it once the next epoch key has been introduced.
type epochKey struct {
	name  string
	epoch uint64
	priv  ed25519.PrivateKey
	vkey  string
	hash  uint32
}

func newEpochKey(name string, epoch uint64) (*epochKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate epoch key: %w", err)
	}
	vkey, err := note.NewEd25519VerifierKey(name, pub)
	if err != nil {
		return nil, err
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, err
	}
	return &epochKey{name: name, epoch: epoch, priv: priv, vkey: vkey, hash: v.KeyHash()}, nil
}

func (k *epochKey) Name() string { return k.name }

func (k *epochKey) KeyHash() uint32 { return k.hash }

func (k *epochKey) Sign(msg []byte) ([]byte, error) {
	if k.priv == nil {
		return nil, errors.New("epoch key already erased")
	}
	return ed25519.Sign(k.priv, msg), nil
}

// Erase overwrites the private key in memory. The key cannot sign afterwards.
func (k *epochKey) Erase() {
	clear(k.priv)
	k.priv = nil
}
