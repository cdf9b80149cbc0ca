package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/receipt"
	"github.com/auditarch/auditarch/archive/verify"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/internal/capfile"
)

// statusVar holds the exit status of the script's last auditarch command, for the status command.
const statusVar = "AUDITARCH_STATUS"

// TestScript runs the command-line scripts in testdata/script (testscript format, as in
// FiloSottile/age's cmd/age/testdata). The recorded captures of ../../testdata/*.cap are copied into each
// script's $WORK. Commands beyond testscript's own:
//
//	auditarch ARGS...        run Main in-process; '!' expects a non-zero exit status
//	status N                 the last auditarch command exited with status N
//	mkarchive CAPFILE DIR    replay a capture file as one writer run into the archive in DIR (key: $WORK/keys)
//	truncate FILEGLOB N      remove N bytes from the end of the file FILEGLOB matches
//	jsonlines N              the last command's stdout is N lines, each a JSON object, indexes increasing
//	storekey DIR NAME        make a store key pair named NAME: DIR/store.key and DIR/store.pub
//	receipt STOREDIR ARCHDIR FILE
//	                         cosign the newest checkpoint of ARCHDIR with STOREDIR/store.key at
//	                         2023-11-14T22:13:20Z (unix 1700000000) and append the receipt to FILE
//
// The auditarch command changes the process's working directory while Main runs (see cmdAuditarch), so
// every other path here is absolute.
func TestScript(t *testing.T) {
	top, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	caps, err := filepath.Glob(filepath.Join(top, "testdata", "*.cap"))
	if err != nil || len(caps) == 0 {
		t.Fatalf("no captures in %s/testdata: %v", top, err)
	}
	testscript.Run(t, testscript.Params{
		Dir: filepath.Join(top, "cmd", "auditarch", "testdata", "script"),
		Setup: func(env *testscript.Env) error {
			for _, c := range caps {
				data, err := os.ReadFile(c)
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(env.WorkDir, filepath.Base(c)), data, 0o644); err != nil {
					return err
				}
			}
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"auditarch": cmdAuditarch,
			"status":    cmdStatus,
			"mkarchive": cmdMkarchive,
			"truncate":  cmdTruncate,
			"jsonlines": cmdJSONLines,
			"storekey":  cmdStorekey,
			"receipt":   cmdReceipt,
		},
	})
}

// chdirMu serialises the in-process auditarch commands of scripts running in parallel: each changes the
// process's working directory for the duration of its Main call, so that relative paths in a script mean
// what they would for exec. testscript itself uses absolute paths once TestScript gives it an absolute Dir.
var chdirMu sync.Mutex

func cmdAuditarch(ts *testscript.TestScript, neg bool, args []string) {
	// Relative paths in arguments are relative to the script's current directory, as for exec.
	chdirMu.Lock()
	wd, err := os.Getwd()
	if err == nil {
		err = os.Chdir(ts.MkAbs("."))
	}
	if err != nil {
		chdirMu.Unlock()
		ts.Fatalf("%v", err)
	}
	code := Main(args, ts.Stdout(), ts.Stderr())
	err = os.Chdir(wd)
	chdirMu.Unlock()
	ts.Check(err)
	ts.Setenv(statusVar, strconv.Itoa(code))
	if neg && code == 0 {
		ts.Fatalf("auditarch succeeded unexpectedly")
	}
	if !neg && code != 0 {
		ts.Fatalf("auditarch failed with exit status %d", code)
	}
}

func cmdStatus(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: status N")
	}
	got := ts.Getenv(statusVar)
	if got == "" {
		ts.Fatalf("status: no auditarch command has run")
	}
	if got != args[0] {
		ts.Fatalf("auditarch exited with status %s, want %s", got, args[0])
	}
}

func cmdMkarchive(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: mkarchive CAPFILE DIR")
	}
	f, err := os.Open(ts.MkAbs(args[0]))
	ts.Check(err)
	defer f.Close()
	c, err := capfile.Read(f)
	ts.Check(err)
	id, err := scriptIdentity(ts)
	ts.Check(err)
	w, err := writer.Create(ts.MkAbs(args[1]), writer.Options{Identity: id, Sync: writer.SyncNone})
	ts.Check(err)
	evs := capfile.Replay(c, int64(1_700_000_000)*1e9)
	for _, ev := range evs {
		w.Append(ev)
	}
	ts.Check(w.Close())
	ts.Logf("mkarchive: %d events in %s", len(evs), w.Dir())
}

// scriptIdentity returns the script's host identity key, $WORK/keys/host.key (origin auditarch/test),
// creating it the first time.
func scriptIdentity(ts *testscript.TestScript) (*archive.Identity, error) {
	dir := ts.MkAbs("keys")
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		if _, err := archive.Keygen(dir, "auditarch/test"); err != nil {
			return nil, err
		}
	}
	return archive.LoadIdentity(filepath.Join(dir, archive.IdentityKeyFile))
}

func cmdTruncate(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: truncate FILEGLOB N")
	}
	n, err := strconv.ParseInt(args[1], 10, 64)
	ts.Check(err)
	files, err := filepath.Glob(ts.MkAbs(args[0]))
	ts.Check(err)
	if len(files) != 1 {
		ts.Fatalf("truncate: %s matches %d files, want 1", args[0], len(files))
	}
	data, err := os.ReadFile(files[0])
	ts.Check(err)
	if n < 0 || n > int64(len(data)) {
		ts.Fatalf("truncate: %s has %d bytes, cannot remove %d", files[0], len(data), n)
	}
	ts.Check(os.WriteFile(files[0], bytes.Clone(data[:int64(len(data))-n]), 0o600))
}

func cmdJSONLines(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: jsonlines N")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	out := ts.ReadFile("stdout")
	if !strings.HasSuffix(out, "\n") {
		ts.Fatalf("stdout does not end with a newline")
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	var last float64
	if len(lines) != want {
		ts.Fatalf("stdout has %d lines, want %d", len(lines), want)
	}
	for i, l := range lines {
		var obj map[string]any
		if err := json.Unmarshal([]byte(l), &obj); err != nil {
			ts.Fatalf("stdout line %d is not a JSON object: %v", i+1, err)
		}
		for _, k := range []string{"index", "seq", "time", "type", "records"} {
			if _, ok := obj[k]; !ok {
				ts.Fatalf("stdout line %d has no %q", i+1, k)
			}
		}
		idx, _ := obj["index"].(float64)
		if i > 0 && idx <= last {
			ts.Fatalf("stdout line %d has index %v, not above the line before (%v)", i+1, idx, last)
		}
		last = idx
	}
}

func cmdStorekey(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: storekey DIR NAME")
	}
	_, err := receipt.CosignerKeygen(ts.MkAbs(args[0]), args[1])
	ts.Check(err)
}

// scriptReceiptTime is when the receipt command's store acknowledges: 2023-11-14T22:13:20Z.
const scriptReceiptTime = 1_700_000_000

func cmdReceipt(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: receipt STOREDIR ARCHDIR FILE")
	}
	c, err := receipt.LoadCosigner(filepath.Join(ts.MkAbs(args[0]), receipt.StoreKeyFile))
	ts.Check(err)
	r, err := verify.Dir(ts.MkAbs(args[1]), verify.Options{})
	ts.Check(err)
	if r.Latest == "" {
		ts.Fatalf("receipt: %s has no signed checkpoint", args[1])
	}
	rc, err := c.Cosign([]byte(r.Latest), time.Unix(scriptReceiptTime, 0))
	ts.Check(err)
	f, err := os.OpenFile(ts.MkAbs(args[2]), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	ts.Check(err)
	ts.Check(receipt.Append(f, rc))
	ts.Check(f.Close())
}
