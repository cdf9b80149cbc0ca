package main

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/auditarch/auditarch/forward"
)

// yamlKeys lists the yaml keys of struct type t and of the structs (and slices of structs) it holds.
func yamlKeys(t reflect.Type) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		keys = append(keys, name)
		ft := f.Type
		if ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft != reflect.TypeOf(time.Time{}) {
			keys = append(keys, yamlKeys(ft)...)
		}
	}
	return keys
}

// documented fails for every key of t that the file at path does not set or show in a comment, each
// preceded by a comment line.
func documented(t *testing.T, path string, typ reflect.Type) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range yamlKeys(typ) {
		if !regexp.MustCompile(`(?m)^[ #]*(- )?` + regexp.QuoteMeta(k) + `:`).Match(b) {
			t.Errorf("%s does not document the key %q", path, k)
		}
	}
}

// TestPackagedConfig: the package's auditarch.yaml documents every configuration key (forward sinks'
// included), parses, and sets protect.mode auto (docs/protect.md, "Default"); its store.yaml documents
// every key of the store's file and parses.
func TestPackagedConfig(t *testing.T) {
	const daemon, storeFile = "../../packaging/auditarch.yaml", "../../packaging/store.yaml"
	documented(t, daemon, reflect.TypeOf(Config{}))
	documented(t, daemon, reflect.TypeOf(forward.SinkConfig{}))
	cfg, err := loadConfig(daemon)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Protect.Mode != ProtectAuto || cfg.Sandbox != SandboxOn || cfg.Rules != "/etc/audit/rules.d/auditarch.rules" ||
		cfg.Key != "/etc/auditarch/keys/host.key" || cfg.Archive != "/var/lib/auditarch/archive" {
		t.Errorf("packaged config: %+v", cfg)
	}
	def := defaultConfig()
	if cfg.FlushInterval != def.FlushInterval || cfg.ReceiveBuffer != def.ReceiveBuffer || cfg.HeartbeatInterval != def.HeartbeatInterval ||
		cfg.Store.MaxBacklog != def.Store.MaxBacklog || cfg.Protect.Pins != def.Protect.Pins || cfg.EpochDuration != def.EpochDuration {
		t.Errorf("the packaged config's values differ from the defaults it claims to show")
	}
	documented(t, storeFile, reflect.TypeOf(StoreFileConfig{}))
	fs := newFlags("store")
	listen, dir := fs.String("listen", "", ""), fs.String("dir", "", "")
	var enroll multiFlag
	fs.Var(&enroll, "enroll", "")
	for _, n := range []string{"grace", "stopped-alarm", "s3-retention", "s3-canary"} {
		fs.Duration(n, 0, "")
	}
	for _, n := range []string{"s3-endpoint", "s3-bucket", "s3-region"} {
		fs.String(n, "", "")
	}
	if err := applyStoreConfig(fs, storeFile); err != nil {
		t.Fatal(err)
	}
	if *listen != ":7361" || *dir != "/var/lib/auditarch-store" {
		t.Errorf("store.yaml: listen %q dir %q", *listen, *dir)
	}
}
