package policy

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/auditarch/auditarch/internal/privtest"
)

// TestGeneratedUpToDate regenerates the BPF object and its Go bindings into a temporary directory with the
// //go:generate line of gen.go and checks they equal the committed ones: an edit to bpf/detect.bpf.c
// without make generate fails here. It needs clang and the libbpf headers (make deps), and the go tool
// (bpf2go is run at its pinned version from the module cache or the proxy): about 6 s.
func TestGeneratedUpToDate(t *testing.T) {
	privtest.Command(t, "clang")
	privtest.Command(t, "llvm-strip")
	if _, err := os.Stat("/usr/include/bpf/bpf_helpers.h"); err != nil {
		privtest.Unavailable(t, "needs the libbpf headers (libbpf-dev; make deps installs them)")
	}
	goTool := privtest.Command(t, "go")
	src, err := os.ReadFile("gen.go")
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, l := range strings.Split(string(src), "\n") {
		if rest, ok := strings.CutPrefix(l, "//go:generate go "); ok {
			args = strings.Fields(rest)
		}
	}
	if len(args) < 2 || args[0] != "run" {
		t.Fatalf("gen.go: no //go:generate go run line")
	}
	out := t.TempDir()
	// bpf2go's options come before its positional ident; -output-dir is put first.
	args = append([]string{"run", args[1], "-output-dir", out}, args[2:]...)
	cmd := exec.Command(goTool, args...)
	cmd.Env = append(os.Environ(), "GOPACKAGE=policy")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, b)
	}
	for _, name := range []string{"detect_x86_bpfel.go", "detect_x86_bpfel.o"} {
		want, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from what bpf/detect.bpf.c generates: run make generate and commit", name)
		}
	}
}
