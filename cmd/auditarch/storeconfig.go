package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"gopkg.in/yaml.v3"
)

// StoreFileConfig is the store's configuration file (auditarch store --config FILE; the package installs
// /etc/auditarch/store.yaml). Each key is the flag of the same name; a flag given on the command line
// wins, and enroll adds to the file's list.
type StoreFileConfig struct {
	Listen       string        `yaml:"listen"`        // --listen
	Dir          string        `yaml:"dir"`           // --dir
	Enroll       []string      `yaml:"enroll"`        // --enroll, each a host.pub
	Grace        time.Duration `yaml:"grace"`         // --grace
	StoppedAlarm time.Duration `yaml:"stopped_alarm"` // --stopped-alarm
	S3           struct {
		Endpoint  string        `yaml:"endpoint"`  // --s3-endpoint
		Bucket    string        `yaml:"bucket"`    // --s3-bucket
		Region    string        `yaml:"region"`    // --s3-region
		Retention time.Duration `yaml:"retention"` // --s3-retention
		Canary    time.Duration `yaml:"canary"`    // --s3-canary
	} `yaml:"s3"`
}

// applyStoreConfig reads path (unknown keys are errors) and sets every flag of fs that the command line
// did not set and the file does.
func applyStoreConfig(fs *flag.FlagSet, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	var c StoreFileConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config %s: %w", path, err)
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	dur := func(d time.Duration) string {
		if d == 0 {
			return ""
		}
		return d.String()
	}
	for _, kv := range [][2]string{{"listen", c.Listen}, {"dir", c.Dir}, {"grace", dur(c.Grace)},
		{"stopped-alarm", dur(c.StoppedAlarm)}, {"s3-endpoint", c.S3.Endpoint}, {"s3-bucket", c.S3.Bucket},
		{"s3-region", c.S3.Region}, {"s3-retention", dur(c.S3.Retention)}, {"s3-canary", dur(c.S3.Canary)}} {
		if kv[1] == "" || given[kv[0]] {
			continue
		}
		if err := fs.Set(kv[0], kv[1]); err != nil {
			return fmt.Errorf("config %s: %s: %w", path, kv[0], err)
		}
	}
	for _, e := range c.Enroll {
		if err := fs.Set("enroll", e); err != nil {
			return err
		}
	}
	return nil
}
