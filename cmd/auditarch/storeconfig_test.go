package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStoreConfig: the store's file sets every flag the command line leaves unset, a flag wins, enroll
// adds up, and an unknown key is an error.
func TestStoreConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.yaml")
	os.WriteFile(path, []byte("listen: ':7361'\ndir: /var/lib/auditarch-store\nenroll: [a.pub]\ngrace: 9s\nstopped_alarm: 1h\n"+
		"s3: {endpoint: 'http://s3', bucket: b, region: r, retention: 2160h, canary: 30m}\n"), 0o600)
	fs := newFlags("store")
	listen := fs.String("listen", "", "")
	dir := fs.String("dir", "", "")
	grace := fs.Duration("grace", 5*time.Second, "")
	alarm := fs.Duration("stopped-alarm", 0, "")
	var enroll multiFlag
	fs.Var(&enroll, "enroll", "")
	ep, bucket, region := fs.String("s3-endpoint", "", ""), fs.String("s3-bucket", "", ""), fs.String("s3-region", "us-east-1", "")
	ret, canary := fs.Duration("s3-retention", 0, ""), fs.Duration("s3-canary", time.Hour, "")
	if _, err := parseFlags(fs, []string{"--listen", ":9", "--enroll", "b.pub"}); err != nil {
		t.Fatal(err)
	}
	if err := applyStoreConfig(fs, path); err != nil {
		t.Fatal(err)
	}
	got := []any{*listen, *dir, *grace, *alarm, enroll.String(), *ep, *bucket, *region, *ret, *canary}
	want := []any{":9", "/var/lib/auditarch-store", 9 * time.Second, time.Hour, "b.pub,a.pub", "http://s3", "b", "r", 2160 * time.Hour, 30 * time.Minute}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("value %d = %v, want %v", i, got[i], want[i])
		}
	}
	os.WriteFile(path, []byte("listen: ':1'\nlisen: x\n"), 0o600)
	if err := applyStoreConfig(newFlags("store"), path); err == nil || !strings.Contains(err.Error(), "lisen") {
		t.Errorf("unknown key: %v", err)
	}
}
