package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"gopkg.in/yaml.v3"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/policy"

	"github.com/auditarch/auditarch/rules"
)

// Config is the daemon's configuration file (YAML). Every field has a working default.
type Config struct {
	Archive string `yaml:"archive"` // archive directory
	Key     string `yaml:"key"`     // host identity key (host.key); created on first run if missing
	Rules   string `yaml:"rules"`   // auditctl-syntax rule file; empty: the built-in set
	Lock    bool   `yaml:"lock"`    // -e 2 after loading the rules

	ReceiveBuffer int           `yaml:"receive_buffer"` // netlink receive buffer, bytes (SO_RCVBUFFORCE)
	EventTimeout  time.Duration `yaml:"event_timeout"`  // how long an event without EOE waits for more records
	GapGrace      time.Duration `yaml:"gap_grace"`      // how long a missing serial may still arrive before it is reported lost
	LostPoll      time.Duration `yaml:"lost_poll"`      // how often the kernel's lost counter is read
	FlushInterval time.Duration `yaml:"flush_interval"` // how often the archive is written and fsynced

	SegmentDuration   time.Duration         `yaml:"segment_duration"`   // segments are cut at multiples of this
	EpochDuration     time.Duration         `yaml:"epoch_duration"`     // lifetime of an epoch signing key
	HeartbeatInterval time.Duration         `yaml:"heartbeat_interval"` // HEARTBEAT leaf after this long without events
	Sync              writer.SyncPolicy     `yaml:"sync"`               // batch (fsync every batch) or none
	DiskFull          writer.DiskFullAction `yaml:"disk_full"`          // keep (hold, then drop with a LOST leaf) or exit

	// Supervise: run restarts the daemon in a child process whenever it dies (supervise.go); for hosts
	// without a service manager that does (systemd's Restart=always).
	Supervise bool `yaml:"supervise"`

	Store   StoreConfig   `yaml:"store"`
	Protect ProtectConfig `yaml:"protect"`
	// Sandbox is SandboxOn (default: the daemon confines itself once set up) or SandboxOff.
	Sandbox string        `yaml:"sandbox"`
	Forward ForwardConfig `yaml:"forward"` // SIEM sinks (forward.go, docs/forward.md)
	// Retention removes the oldest segments once the store holds them (retention.go, docs/operate.md).
	Retention RetentionConfig `yaml:"retention"`
	Alert     AlertConfig     `yaml:"alert"`   // alert.go
	Metrics   MetricsConfig   `yaml:"metrics"` // the Prometheus endpoint (metrics.go, docs/operate.md)

	source string // the file it was read from, if any
}

// Protection modes (docs/protect.md).
const (
	ProtectOff     = "off"     // no BPF programs: only the audit configuration guard
	ProtectDetect  = "detect"  // BPF programs record attempts on the daemon, stop the doer; its session is frozen
	ProtectEnforce = "enforce" // BPF LSM programs refuse them (EPERM) and record them; the doer's session is frozen
	ProtectAuto    = "auto"    // enforce where the kernel runs BPF LSM programs, else detect
)

// ProtectConfig says how the daemon defends itself.
type ProtectConfig struct {
	Mode string `yaml:"mode"` // ProtectOff (default), ProtectDetect, ProtectEnforce or ProtectAuto
	// Pins is where the BPF programs, links and maps are pinned so that protection outlives the daemon;
	// its parent must be a bpf filesystem (the daemon mounts /sys/fs/bpf when it is not one).
	Pins string `yaml:"pins"`
}

// StoreConfig says where the archive is shipped. Without an address, run starts a store in-process on
// loopback (its own directory and key) so that the whole path works on one machine.
type StoreConfig struct {
	Address string `yaml:"address"` // host:port of the store; empty: the embedded store
	Key     string `yaml:"key"`     // the store's public key file (store.pub), pinned; required with address
	Dir     string `yaml:"dir"`     // the embedded store's directory; default "store" beside the archive
	// MaxBacklog bounds the bytes archived and not yet acknowledged by the store: beyond it events are
	// dropped and counted into a LOST leaf (ship_backlog) until the store catches up.
	MaxBacklog int64 `yaml:"max_backlog"`
}

func defaultConfig() Config {
	return Config{
		ReceiveBuffer: 64 << 20,
		EventTimeout:  time.Second,
		GapGrace:      5 * time.Second,
		LostPoll:      time.Second,
		// Events ship once durable locally: the flush interval is most of the time to the store.
		FlushInterval: 20 * time.Millisecond,
		Key:           "/etc/auditarch/keys/host.key", // a 0700 directory: /etc/auditarch holds readable configuration
		Protect:       ProtectConfig{Mode: ProtectOff, Pins: policy.DefaultPinDir},

		SegmentDuration: time.Hour,
		EpochDuration:   time.Minute,

		HeartbeatInterval: archive.DefaultHeartbeat,
		Sync:              writer.SyncBatch,
		DiskFull:          writer.DiskFullKeep,
		Store:             StoreConfig{MaxBacklog: 1 << 30},
		Sandbox:           SandboxOn,
		Retention:         RetentionConfig{Keep: DefaultRetentionKeep},
		Alert:             defaultAlertConfig(),
	}
}

// loadConfig reads path over the defaults. Unknown keys are errors: a typo must not silently fall back.
func loadConfig(path string) (Config, error) {
	cfg := defaultConfig()
	if path == "" {
		return cfg, nil
	}
	cfg.source = path
	data, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("read config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	switch {
	case cfg.Sync != writer.SyncBatch && cfg.Sync != writer.SyncNone:
		return cfg, fmt.Errorf("config %s: sync: %q is not batch or none", path, cfg.Sync)
	case cfg.DiskFull != writer.DiskFullKeep && cfg.DiskFull != writer.DiskFullExit:
		return cfg, fmt.Errorf("config %s: disk_full: %q is not keep or exit", path, cfg.DiskFull)
	case cfg.Sandbox != SandboxOn && cfg.Sandbox != SandboxOff:
		return cfg, fmt.Errorf("config %s: sandbox: %q is not on or off", path, cfg.Sandbox)
	case cfg.Retention.Keep < 0 || cfg.Retention.MaxBytes < 0:
		return cfg, fmt.Errorf("config %s: retention: keep %s and max_bytes %d must not be negative (0: no limit)", path, cfg.Retention.Keep, cfg.Retention.MaxBytes)
	}
	if err := checkMetricsListen(cfg.Metrics.Listen); err != nil {
		return cfg, fmt.Errorf("config %s: metrics.listen: %w", path, err)
	}
	if _, err := newSinks(cfg, cfg.Archive, nil, "", zerolog.Nop()); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// ruleSet loads the configured rule file, or the built-in default set.
func (c Config) ruleSet() (*rules.Set, error) {
	set := rules.Default()
	if c.Rules != "" {
		var err error
		if set, err = rules.ParseFile(c.Rules); err != nil {
			return nil, err
		}
	}
	if c.Protect.Mode == ProtectOff {
		return set, nil
	}
	// With protection on, the kernel also watches the daemon's own files: whoever else writes or
	// removes anything in the archive, or reads the identity key, is caught (defendAudit). The daemon's
	// own accesses are not audited (its never rule stands ahead of these watches).
	// Prepended (-A), behind only the daemon's never rule: the first rule that matches gives the event
	// its key, and the built-in set's own file rules would otherwise take these events. A directory is
	// watched with dir=, its whole subtree.
	watches := fmt.Sprintf("-A always,exit -F dir=%s -F perm=wa -k %s\n", filepath.Clean(c.Archive), protectKey)
	if c.Key != "" {
		watches += fmt.Sprintf("-A always,exit -F path=%s -F perm=rwa -k %s\n", filepath.Clean(c.Key), protectKey)
	}
	w, err := rules.Parse(strings.NewReader(watches), "protection watches")
	if err != nil {
		return nil, err
	}
	n := len(set.Ops)
	if set.Locks() { // the lock stays last
		n--
	}
	set.Ops = append(set.Ops[:n:n], append(w.Ops, set.Ops[n:]...)...)
	return set, nil
}

// protectKey is the audit rule key of the watches on the daemon's own files.
const protectKey = "auditarch-protect"
