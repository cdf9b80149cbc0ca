// Package packaging_test builds the Debian package with make deb and checks it: its control fields and
// contents, lintian, and an install into a fresh Debian root (mmdebstrap, cached) with dpkg, where the
// postinst's key, the configuration, systemd-analyze verify on the units, remove and purge are checked.
package packaging_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/auditarch/auditarch/internal/privtest"
)

var (
	buildOnce sync.Once
	debPath   string
	debStage  string
	buildErr  string
)

// deb builds the package once per test binary, into a temporary directory, with make deb.
func deb(t *testing.T) (pkg, stage string) {
	t.Helper()
	privtest.Command(t, "make")
	privtest.Command(t, "dpkg-deb")
	buildOnce.Do(func() {
		out, err := os.MkdirTemp("", "auditarch-deb-")
		if err != nil {
			buildErr = err.Error()
			return
		}
		stage = filepath.Join(out, "stage")
		cmd := exec.Command("make", "-C", "..", "deb", "DEB_BUILD="+stage, "DEB_OUT="+out)
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = err.Error() + "\n" + string(b)
			return
		}
		debs, _ := filepath.Glob(filepath.Join(out, "auditarch_*_amd64.deb"))
		if len(debs) != 1 {
			buildErr = "make deb made no package"
			return
		}
		debPath, debStage = debs[0], stage
	})
	if buildErr != "" {
		t.Fatalf("make deb: %s", buildErr)
	}
	return debPath, debStage
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestDebContents: the control fields, the conffiles, every file with its mode, the rules file equal to
// `auditarch rules`, the generated man page.
func TestDebContents(t *testing.T) {
	pkg, stage := deb(t)
	info := run(t, "dpkg-deb", "-I", pkg)
	for _, want := range []string{"Package: auditarch", "Architecture: amd64", "Conflicts: auditd", "Replaces: auditd",
		"Section: admin", "postinst", "prerm", "postrm"} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb -I lacks %q:\n%s", want, info)
		}
	}
	conffiles := run(t, "dpkg-deb", "-f", pkg, "Version") // a version dpkg accepts
	if !regexp.MustCompile(`^\d+\.\d+\.\d+~dev\.git\d+-1\n$`).MatchString(conffiles) {
		t.Errorf("version %q", conffiles)
	}
	ctl := t.TempDir()
	run(t, "dpkg-deb", "-e", pkg, ctl)
	cf, _ := os.ReadFile(filepath.Join(ctl, "conffiles"))
	for _, f := range []string{"/etc/auditarch/auditarch.yaml", "/etc/auditarch/store.yaml", "/etc/audit/rules.d/auditarch.rules"} {
		if !strings.Contains(string(cf), f+"\n") {
			t.Errorf("conffiles lacks %s:\n%s", f, cf)
		}
	}
	list := run(t, "dpkg-deb", "-c", pkg)
	for path, mode := range map[string]string{
		"./usr/sbin/auditarch":                          "-rwxr-xr-x",
		"./usr/libexec/auditarch-confine":               "-rwxr-xr-x",
		"./lib/systemd/system/auditarch.service":        "-rw-r--r--",
		"./lib/systemd/system/auditarch-store.service":  "-rw-r--r--",
		"./etc/auditarch/auditarch.yaml":                "-rw-r--r--",
		"./etc/auditarch/store.yaml":                    "-rw-r--r--",
		"./etc/audit/rules.d/auditarch.rules":           "-rw-r-----",
		"./usr/share/man/man8/auditarch.8.gz":           "-rw-r--r--",
		"./usr/share/doc/auditarch/copyright":           "-rw-r--r--",
		"./usr/share/doc/auditarch/changelog.Debian.gz": "-rw-r--r--",
		"./usr/share/doc/auditarch/install.md":          "-rw-r--r--",
		"./usr/share/lintian/overrides/auditarch":       "-rw-r--r--",
	} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(mode) + ` root/root .* ` + regexp.QuoteMeta(path) + `$`).MatchString(list) {
			t.Errorf("the package lacks %s %s:\n%s", mode, path, list)
		}
	}
	if strings.Contains(list, "/var/lib/auditarch") || strings.Contains(list, "host.key") {
		t.Errorf("the package ships state or keys:\n%s", list)
	}
	rules := run(t, filepath.Join(stage, "auditarch"), "rules")
	if b, _ := os.ReadFile(filepath.Join(stage, "auditarch.rules")); string(b) != rules {
		t.Errorf("the packaged rules differ from auditarch rules")
	}
	man := run(t, "sh", "-c", "zcat "+filepath.Join(stage, "auditarch.8.gz"))
	for _, want := range []string{".TH AUDITARCH 8", ".SH SYNOPSIS", ".SH OPTIONS", `\-\-protect MODE`, "DO NOT EDIT"} {
		if !strings.Contains(man, want) {
			t.Errorf("man page lacks %q", want)
		}
	}
	unit, _ := os.ReadFile("auditarch.service")
	for _, want := range []string{"Type=notify", "WatchdogSec=", "Restart=always", "ProtectSystem=strict", "CapabilityBoundingSet="} {
		if !bytes.Contains(unit, []byte("\n"+want)) {
			t.Errorf("auditarch.service lacks %s", want)
		}
	}
}

// TestDebLintian: lintian reports nothing that the overrides file does not justify.
func TestDebLintian(t *testing.T) {
	lintian := privtest.Command(t, "lintian")
	pkg, _ := deb(t)
	out, err := exec.Command(lintian, "--tag-display-limit", "0", "-EvIL", "+pedantic", pkg).CombinedOutput()
	var tags []string
	for _, l := range strings.Split(string(out), "\n") {
		if len(l) > 2 && l[1] == ':' && strings.ContainsRune("EWIPX", rune(l[0])) {
			tags = append(tags, l)
		}
	}
	if err != nil || len(tags) > 0 {
		t.Errorf("lintian: %v\n%s", err, strings.Join(tags, "\n"))
	}
}

// debRoot is the cached minimal Debian root (bookworm, minbase with systemd for systemd-analyze and
// init-system-helpers for the maintainer scripts), made once with mmdebstrap from the configured mirror.
const debRoot = "/var/cache/auditarch/debroot-bookworm.tar"

// TestDebInstall installs the package with dpkg into a fresh Debian root and checks what the postinst
// made (the host key 0600 in a 0700 directory, its public key printed, the unit enabled), that the
// installed configuration parses and loads the packaged rules, that systemd-analyze verify accepts the
// units, and that remove keeps the keys and archive and purge removes the configuration only.
func TestDebInstall(t *testing.T) {
	privtest.Root(t)
	mmdebstrap := privtest.Command(t, "mmdebstrap")
	pkg, _ := deb(t)
	if _, err := os.Stat(debRoot); err != nil {
		os.MkdirAll(filepath.Dir(debRoot), 0o755)
		tmp := strings.TrimSuffix(debRoot, ".tar") + ".tmp.tar"
		run(t, mmdebstrap, "--quiet", "--variant=minbase", "--include=systemd,init-system-helpers", "bookworm", tmp)
		if err := os.Rename(tmp, debRoot); err != nil {
			t.Fatal(err)
		}
	}
	root := t.TempDir()
	run(t, "tar", "-C", root, "-xf", debRoot)
	if err := os.WriteFile(filepath.Join(root, "tmp", filepath.Base(pkg)), mustRead(t, pkg), 0o644); err != nil {
		t.Fatal(err)
	}
	in := func(args ...string) string {
		t.Helper()
		return run(t, "chroot", append([]string{root}, args...)...)
	}
	out := in("dpkg", "-i", "/tmp/"+filepath.Base(pkg))
	pub := strings.TrimSpace(string(mustRead(t, filepath.Join(root, "etc/auditarch/keys/host.pub"))))
	if pub == "" || !strings.Contains(out, pub) {
		t.Errorf("postinst did not print the public key %q:\n%s", pub, out)
	}
	for path, mode := range map[string]os.FileMode{"etc/auditarch/keys": 0o700 | os.ModeDir, "etc/auditarch/keys/host.key": 0o600,
		"var/lib/auditarch": 0o700 | os.ModeDir} {
		if st, err := os.Stat(filepath.Join(root, path)); err != nil || st.Mode() != mode {
			t.Errorf("/%s: %v %v, want %v", path, st.Mode(), err, mode)
		}
	}
	if _, err := os.Readlink(filepath.Join(root, "etc/systemd/system/multi-user.target.wants/auditarch.service")); err != nil {
		t.Errorf("auditarch.service is not enabled: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(root, "etc/systemd/system/multi-user.target.wants/auditarch-store.service")); err == nil {
		t.Errorf("auditarch-store.service is enabled on a host")
	}
	rules := in("auditarch", "rules", "--config", "/etc/auditarch/auditarch.yaml")
	packaged := string(mustRead(t, filepath.Join(root, "etc/audit/rules.d/auditarch.rules")))
	for _, l := range strings.Split(strings.TrimSpace(packaged), "\n") {
		if !strings.Contains(rules, l) {
			t.Errorf("auditarch rules --config lacks the packaged rule %q", l)
		}
	}
	// protect.mode auto: the daemon's files are watched.
	if !strings.Contains(rules, "-w /var/lib/auditarch/archive -p wa -k auditarch-protect") ||
		!strings.Contains(rules, "-w /etc/auditarch/keys/host.key -p rwa -k auditarch-protect") {
		t.Errorf("the packaged configuration does not protect the archive and key:\n%s", rules)
	}
	in("systemd-analyze", "verify", "--man=no", "/lib/systemd/system/auditarch.service", "/lib/systemd/system/auditarch-store.service")
	in("auditarch", "keygen", "--out", "/tmp/k") // the binary runs in a bare root
	// A second configure (reinstall) keeps the key.
	in("dpkg", "-i", "/tmp/"+filepath.Base(pkg))
	if again := strings.TrimSpace(string(mustRead(t, filepath.Join(root, "etc/auditarch/keys/host.pub")))); again != pub {
		t.Errorf("reinstall replaced the host key")
	}
	os.MkdirAll(filepath.Join(root, "var/lib/auditarch/archive"), 0o700)
	os.WriteFile(filepath.Join(root, "var/lib/auditarch/archive/seg-evidence"), []byte("x"), 0o600)

	in("dpkg", "-r", "auditarch")
	for _, p := range []string{"etc/auditarch/keys/host.key", "var/lib/auditarch/archive/seg-evidence", "etc/auditarch/auditarch.yaml"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("remove deleted /%s", p)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "usr/sbin/auditarch")); err == nil {
		t.Errorf("remove left the binary")
	}
	in("dpkg", "-P", "auditarch")
	for _, p := range []string{"etc/auditarch/auditarch.yaml", "etc/auditarch/store.yaml", "etc/audit/rules.d/auditarch.rules"} {
		if _, err := os.Stat(filepath.Join(root, p)); err == nil {
			t.Errorf("purge left /%s", p)
		}
	}
	for _, p := range []string{"etc/auditarch/keys/host.key", "var/lib/auditarch/archive/seg-evidence"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("purge deleted /%s", p)
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
