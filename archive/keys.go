package archive

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/auditarch/auditarch/internal/keyfile"
)

// Identity key files written by Keygen (docs/format.md, "Keys").
const (
	IdentityKeyFile = "host.key" // note signer key, 0600
	IdentityPubFile = "host.pub" // note verifier key: what a verifier pins
)

// Keygen writes a new host identity key pair into dir (created 0700): host.key (0600) and host.pub. The
// key's name is origin, which every checkpoint of the host's archive names. It refuses to overwrite.
func Keygen(dir, origin string) (vkey string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create key directory: %w", err)
	}
	if err := keyfile.CheckPrivate(dir); err != nil {
		return "", err
	}
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		return "", fmt.Errorf("generate key for origin %q: %w", origin, err)
	}
	if err := keyfile.WriteNew(filepath.Join(dir, IdentityKeyFile), skey+"\n", 0o600); err != nil {
		return "", err
	}
	if err := keyfile.WriteNew(filepath.Join(dir, IdentityPubFile), vkey+"\n", 0o644); err != nil {
		return "", err
	}
	return vkey, nil
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
	skey, err := keyfile.ReadPrivate(path, "identity key")
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

// signerSeed decodes a note signer key into its Ed25519 private key.
func signerSeed(skey string) (ed25519.PrivateKey, error) {
	parts := strings.SplitN(skey, "+", 5)
	if len(parts) != 5 || parts[0] != "PRIVATE" || parts[1] != "KEY" {
		return nil, errors.New("not a note signer key")
	}
	raw, err := DecodeBase64(parts[4])
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
	raw, err := DecodeBase64(parts[2])
	if err != nil || len(raw) != 1+ed25519.PublicKeySize || raw[0] != 1 {
		return nil, errors.New("not an Ed25519 note verifier key")
	}
	return ed25519.PublicKey(raw[1:]), nil
}
