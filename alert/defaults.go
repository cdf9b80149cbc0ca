package alert

import (
	"embed"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// DefaultDir is where the daemon reads its pattern files.
const DefaultDir = "/etc/auditarch/alert"

// builtin is the bastion rule set (docs/alert.md, "The built-in rules").
//
//go:embed rules
var builtin embed.FS

// Defaults returns the built-in rule files: "cracking.d/auditarch" and so on.
func Defaults() fs.FS {
	sub, err := fs.Sub(builtin, "rules")
	if err != nil {
		panic(err) // the embedded tree has that directory
	}
	return sub
}

// InstallDefaults writes the built-in rule files under dir, creating the directories (0755) and files
// (0644) that are missing. A file that exists is left as it is, whatever it holds: the administrator's
// edits are never overwritten. It returns the files it wrote, relative to dir.
func InstallDefaults(dir string) ([]string, error) {
	var wrote []string
	err := fs.WalkDir(Defaults(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := filepath.Join(dir, filepath.FromSlash(path))
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := fs.ReadFile(Defaults(), path)
		if err != nil {
			return err
		}
		f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := f.Write(b); err != nil {
			f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		wrote = append(wrote, path)
		return f.Close()
	})
	return wrote, err
}
