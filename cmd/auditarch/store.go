package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/verify"
	"github.com/auditarch/auditarch/store"
	"github.com/auditarch/auditarch/store/s3lock"
)

// storeCmd runs the write-once store, enrolls hosts, or verifies the store's copy.
func storeCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "enroll":
			return storeEnrollCmd(args[1:], stdout)
		case "verify":
			return storeVerifyCmd(args[1:], stdout)
		}
	}
	fs := newFlags("store")
	listen := fs.String("listen", "", "")
	dir := fs.String("dir", "", "")
	grace := fs.Duration("grace", archive.DefaultGrace, "")
	stoppedAlarm := fs.Duration("stopped-alarm", store.DefaultStoppedAlarm, "")
	var enroll multiFlag
	fs.Var(&enroll, "enroll", "")
	s3Endpoint := fs.String("s3-endpoint", "", "")
	s3Bucket := fs.String("s3-bucket", "", "")
	s3Region := fs.String("s3-region", "us-east-1", "")
	s3Retention := fs.Duration("s3-retention", 0, "")
	s3Canary := fs.Duration("s3-canary", time.Hour, "")
	metrics := fs.String("metrics", "", "")
	trace := fs.String("trace", "", "") // benchmarks: a line per acknowledgement (store.Config.Trace)
	configFile := fs.String("config", "", "")
	mailConfig := fs.String("mail-config", "", "")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, pos[0])
	}
	if *configFile != "" {
		if err := applyStoreConfig(fs, *configFile); err != nil {
			return err
		}
	}
	if *listen == "" || *dir == "" {
		return fmt.Errorf("%w: store needs --listen ADDR and --dir DIR (or listen: and dir: in --config)", errUsage)
	}
	if err := checkMetricsListen(*metrics); err != nil {
		return fmt.Errorf("%w: --metrics: %v", errUsage, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGTERM, unix.SIGINT)
	defer stop()
	log := zerolog.New(stderr).Level(zerolog.InfoLevel).With().Timestamp().Logger()
	if err := enrollFiles(*dir, enroll, func(origin string) { log.Info().Str("host", origin).Msg("enrolled") }); err != nil {
		return err
	}
	cfg := store.Config{Dir: *dir, Grace: *grace, StoppedAlarm: *stoppedAlarm, Log: log}
	if *trace != "" {
		f, err := os.Create(*trace)
		if err != nil {
			return err
		}
		defer f.Close()
		cfg.Trace = f
	}
	var locked *s3lock.Store
	if *s3Endpoint != "" || *s3Bucket != "" {
		if *s3Retention <= 0 {
			return fmt.Errorf("%w: --s3-retention D (the COMPLIANCE retention of every object) is required with S3", errUsage)
		}
		locked, err = s3lock.Open(ctx, s3lock.Config{Endpoint: *s3Endpoint, Region: *s3Region, Bucket: *s3Bucket,
			AccessKey: os.Getenv("AWS_ACCESS_KEY_ID"), SecretKey: os.Getenv("AWS_SECRET_ACCESS_KEY"),
			Retention: *s3Retention, Prefix: "auditarch/"}, log)
		if err != nil {
			return &hinted{err, "the bucket must exist with Object Lock enabled; credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"}
		}
		cfg.Upload = locked
	}
	srv, err := store.Open(cfg)
	if err != nil {
		return err
	}
	if *mailConfig != "" {
		stopMail, err := startStoreMail(ctx, *dir, *mailConfig, log)
		if err != nil {
			return err
		}
		defer stopMail()
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	if locked != nil {
		go canaryLoop(ctx, locked, srv, *s3Canary)
	}
	if *metrics != "" {
		_, stopMetrics, err := serveMetrics(*metrics, &storeCollector{srv}, log)
		if err != nil {
			ln.Close()
			return err
		}
		defer stopMetrics()
	}
	return srv.Serve(ctx, ln)
}

// canaryLoop checks now and every interval that the bucket refuses to delete a locked object.
func canaryLoop(ctx context.Context, s *s3lock.Store, srv *store.Server, every time.Duration) {
	for {
		if err := s.Canary(ctx); err != nil && ctx.Err() == nil {
			srv.Raise(store.AlarmWriteOnce, "", "the object store's canary check failed: %v", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// storeEnrollCmd: auditarch store enroll --dir DIR HOST.pub...
func storeEnrollCmd(args []string, stdout io.Writer) error {
	fs := newFlags("store enroll")
	dir := fs.String("dir", "", "")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if *dir == "" || len(pos) == 0 {
		return fmt.Errorf("%w: store enroll needs --dir DIR and at least one host.pub", errUsage)
	}
	return enrollFiles(*dir, pos, func(origin string) { fmt.Fprintf(stdout, "enrolled %s\n", origin) })
}

// enrollFiles admits the hosts whose identity keys (host.pub) are in files to the store in dir.
func enrollFiles(dir string, files []string, enrolled func(origin string)) error {
	if err := os.MkdirAll(filepath.Join(dir, store.HostsDir), 0o700); err != nil {
		return err
	}
	for _, p := range files {
		vkey, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		origin, err := store.Enroll(dir, string(vkey))
		if err != nil {
			return err
		}
		enrolled(origin)
	}
	return nil
}

// storeVerifyCmd: auditarch store verify [--json] DIR — every host area verified like a host archive,
// its receipts checked against the store key, and its sealed segments checked for the immutable flag
// (store.VerifyDir).
func storeVerifyCmd(args []string, stdout io.Writer) error {
	fs := newFlags("store verify")
	asJSON := fs.Bool("json", false, "")
	s3Endpoint := fs.String("s3-endpoint", "", "")
	s3Bucket := fs.String("s3-bucket", "", "")
	s3Region := fs.String("s3-region", "us-east-1", "")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	// With a bucket, every sealed segment must be there under COMPLIANCE retention that has not run out.
	var opts store.VerifyDirOptions
	if *s3Bucket != "" {
		locked, err := s3lock.Open(context.Background(), s3lock.Config{Endpoint: *s3Endpoint, Region: *s3Region, Bucket: *s3Bucket,
			AccessKey: os.Getenv("AWS_ACCESS_KEY_ID"), SecretKey: os.Getenv("AWS_SECRET_ACCESS_KEY"), Retention: time.Hour, Prefix: "auditarch/"}, zerolog.Nop())
		if err != nil {
			return fmt.Errorf("store verify: %w", err)
		}
		opts.ObjectLock = locked
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: store verify needs the store directory", errUsage)
	}
	rep, err := store.VerifyDir(context.Background(), pos[0], opts)
	if err != nil {
		return fmt.Errorf("store verify: %w", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep.Hosts)
	} else {
		for _, hr := range rep.Hosts {
			r := hr.Report
			fmt.Fprintf(stdout, "%s: %s, %s (%d verified), %s, %s", hr.Host, r.Status, plural(int(r.Leaves), "leaf", "leaves"), r.Verified,
				plural(len(r.Segments), "segment", "segments"), plural(hr.Receipts, "receipt", "receipts"))
			if hr.BadReceipts > 0 {
				fmt.Fprintf(stdout, ", %d receipts NOT signed by the store key", hr.BadReceipts)
			}
			if hr.Evidence > 0 {
				fmt.Fprintf(stdout, ", %d refused submissions kept as evidence", hr.Evidence)
			}
			fmt.Fprintln(stdout)
			for _, p := range r.Problems {
				fmt.Fprintf(stdout, "  %s [%s] %s\n", strings.ToLower(p.Class), p.Code, p.Message)
			}
			for _, u := range hr.NotLocked {
				fmt.Fprintf(stdout, "  sealed segment not under object lock: %s\n", u)
			}
			if len(hr.MutableSealed) > 0 {
				fmt.Fprintf(stdout, "  sealed segments without the immutable flag: %s\n", strings.Join(hr.MutableSealed, " "))
			}
		}
	}
	if code := exitFor(rep.Status()); code != 0 {
		return &exitError{code: code, err: errors.New("store verify: not every host passed")}
	}
	return nil
}

func exitFor(status string) int {
	switch status {
	case verify.Tampered:
		return 4
	case verify.Incomplete:
		return 3
	}
	return 0
}

// plural is "1 segment", "2 segments".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
