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

// TestGeneratedUpToDate regenerates the BPF objects and their Go bindings into temporary directories with
// each //go:generate line of gen.go and checks they equal the committed ones: an edit to a bpf/*.bpf.c
// without make generate fails here. It needs clang and the libbpf headers (make deps), and the go tool
// (bpf2go is run at its pinned version from the module cache or the proxy): a few seconds.
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
	var lines [][]string
	for _, l := range strings.Split(string(src), "\n") {
		if rest, ok := strings.CutPrefix(l, "//go:generate go "); ok {
			lines = append(lines, strings.Fields(rest))
		}
	}
	if len(lines) == 0 {
		t.Fatalf("gen.go: no //go:generate go run line")
	}
	for _, args := range lines {
		if len(args) < 2 || args[0] != "run" {
			t.Fatalf("gen.go: %q is not a go run line", args)
		}
		// The identifier is the argument before the C source: it names the outputs.
		var ident, source string
		for i, a := range args {
			if strings.HasSuffix(a, ".c") && i > 0 {
				ident, source = args[i-1], a
				break
			}
		}
		out := t.TempDir()
		// bpf2go's options come before its positional ident; -output-dir is put first.
		args = append([]string{"run", args[1], "-output-dir", out}, args[2:]...)
		cmd := exec.Command(goTool, args...)
		cmd.Env = append(os.Environ(), "GOPACKAGE=policy")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", cmd, err, b)
		}
		for _, name := range []string{ident + "_x86_bpfel.go", ident + "_x86_bpfel.o"} {
			want, err := os.ReadFile(filepath.Join(out, name))
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from what %s generates: run make generate and commit", name, source)
			}
		}
	}
}
