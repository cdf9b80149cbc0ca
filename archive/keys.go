package archive

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/auditarch/auditarch/internal/durable"
)

// Identity key files written by Keygen (docs/format.md, "Keys").
const (
	IdentityKeyFile = "host.key" // note signer key, 0600
	IdentityPubFile = "host.pub" // note verifier key: what a verifier pins
)

// ErrPermissions is wrapped when a key or archive file is readable or writable by others.
var ErrPermissions = errors.New("permissions too open")

// Keygen writes a new host identity key pair into dir (created 0700): host.key (0600) and host.pub. The
// key's name is origin, which every checkpoint of the host's archive names. It refuses to overwrite.
func Keygen(dir, origin string) (vkey string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create key directory: %w", err)
	}
	if err := checkPrivate(dir); err != nil {
		return "", err
	}
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		return "", fmt.Errorf("generate key for origin %q: %w", origin, err)
	}
	if err := writeNew(filepath.Join(dir, IdentityKeyFile), skey+"\n", 0o600); err != nil {
		return "", err
	}
	if err := writeNew(filepath.Join(dir, IdentityPubFile), vkey+"\n", 0o644); err != nil {
		return "", err
	}
	return vkey, nil
}

func writeNew(path, data string, mode fs.FileMode) error {
	if err := durable.Create(path, []byte(data), mode); err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	return nil
}

// checkPrivate fails unless path (a file or directory) is inaccessible to group and others.
func checkPrivate(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if m := st.Mode().Perm(); m&0o077 != 0 {
		want := fs.FileMode(0o600)
		if st.IsDir() {
			want = 0o700
		}
		return fmt.Errorf("%s: mode %04o: %w (want %04o)", path, m, ErrPermissions, want)
	}
	return nil
}

// readPrivateKey reads a private key file, which must be 0600 (or stricter) in a 0700 directory.
func readPrivateKey(path, what string) (string, error) {
	if err := checkPrivate(filepath.Dir(path)); err != nil {
		return "", err
	}
	if err := checkPrivate(path); err != nil {
		return "", err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", what, err)
	}
	return strings.TrimSpace(string(data)), nil
}

// Identity is the host's long-term key. It signs only the checkpoint that covers a START leaf (the
// genesis, and each re-key when a run starts); epoch keys sign everything else.
type Identity struct {
	Signer note.Signer
	VKey   string // verifier key, note format
	// Key is the same key for TLS: the host's client certificate to the store carries its public half,
	// which binds the connection to the identity that signs the host's archive.
	Key ed25519.PrivateKey
}

// LoadIdentity reads the private identity key file. The file must be 0600 (or stricter) and its
// directory 0700: a key others can read is no evidence of anything.
func LoadIdentity(path string) (*Identity, error) {
	skey, err := readPrivateKey(path, "identity key")
	if err != nil {
		return nil, err
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, fmt.Errorf("identity key %s: %w", path, err)
	}
	// The verifier key is the public half: PRIVATE+KEY+name+hash+base64(alg||seed) → name+hash+base64(alg||pub).
	priv, err := signerSeed(skey)
	if err != nil {
		return nil, fmt.Errorf("identity key %s: %w", path, err)
	}
	vkey, err := note.NewEd25519VerifierKey(s.Name(), priv.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, err
	}
	return &Identity{Signer: s, VKey: vkey, Key: priv}, nil
}

// LoadVerifierKey reads a verifier key file (host.pub).
func LoadVerifierKey(path string) (note.Verifier, string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("read public key: %w", err)
	}
	vkey := strings.TrimSpace(string(data))
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, "", fmt.Errorf("public key %s: %w", path, err)
	}
	return v, vkey, nil
}

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

func (k *epochKey) Name() string    { return k.name }
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

// signerSeed decodes a note signer key into its Ed25519 private key.
func signerSeed(skey string) (ed25519.PrivateKey, error) {
	parts := strings.SplitN(skey, "+", 5)
	if len(parts) != 5 || parts[0] != "PRIVATE" || parts[1] != "KEY" {
		return nil, errors.New("not a note signer key")
	}
	raw, err := decodeB64(parts[4])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return nil, errors.New("not an Ed25519 note signer key")
	}
	return ed25519.NewKeyFromSeed(raw[1:]), nil
}

// VerifierPublicKey returns the Ed25519 public key inside a note verifier key (name+hash+base64(1||pub)).
func VerifierPublicKey(vkey string) (ed25519.PublicKey, error) {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return nil, errors.New("not a note verifier key")
	}
	raw, err := decodeB64(parts[2])
	if err != nil || len(raw) != 1+ed25519.PublicKeySize || raw[0] != 1 {
		return nil, errors.New("not an Ed25519 note verifier key")
	}
	return ed25519.PublicKey(raw[1:]), nil
}

// TLSKey returns the store key for TLS: the store's certificate carries it, and hosts pin it.
func (c *Cosigner) TLSKey() ed25519.PrivateKey { return c.priv }

// PublicKey returns the store key's Ed25519 public key (what a host's TLS client pins).
func (v *CosignVerifier) PublicKey() ed25519.PublicKey { return v.pub }
