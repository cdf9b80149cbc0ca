package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/auditarch/auditarch/archive"
)

func keygenCmd(args []string, stdout io.Writer) error {
	fs := newFlags("keygen")
	out := fs.String("out", "", "")
	origin := fs.String("origin", "", "")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, pos[0])
	}
	if *out == "" {
		return fmt.Errorf("%w: keygen needs --out DIR", errUsage)
	}
	if *origin == "" {
		if *origin, err = defaultOrigin(); err != nil {
			return err
		}
	}
	vkey, err := archive.Keygen(*out, *origin)
	if err != nil {
		return &hinted{err, "keygen never overwrites a key; choose an empty directory"}
	}
	fmt.Fprintf(stdout, "%s\n", vkey)
	fmt.Fprintf(stdout, "# private key: %s (keep it on the host, 0600)\n", filepath.Join(*out, archive.IdentityKeyFile))
	fmt.Fprintf(stdout, "# public key:  %s (pin it where you verify: auditarch verify --key)\n", filepath.Join(*out, archive.IdentityPubFile))
	return nil
}

// defaultOrigin names a host's archive: auditarch/HOSTNAME.
func defaultOrigin() (string, error) {
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("hostname for the key's origin: %w", err)
	}
	return "auditarch/" + h, nil
}

// loadOrCreateIdentity loads the identity key at path, creating it (with its directory) the first time.
func loadOrCreateIdentity(path string) (id *archive.Identity, created bool, err error) {
	if _, err := os.Stat(path); os.IsNotExist(err) && filepath.Base(path) == archive.IdentityKeyFile {
		origin, err := defaultOrigin()
		if err != nil {
			return nil, false, err
		}
		if _, err := archive.Keygen(filepath.Dir(path), origin); err != nil {
			return nil, false, err
		}
		created = true
	}
	id, err = archive.LoadIdentity(path)
	if err != nil {
		return nil, false, &hinted{err, "create the key with 'auditarch keygen --out DIR' and keep it 0600 in a 0700 directory"}
	}
	return id, created, nil
}
