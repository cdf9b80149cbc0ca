package s3lock

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/rs/zerolog"

	"github.com/auditarch/auditarch/internal/peers"
)

// gateway is one versitygw for a test, with a raw client for checks the Store does not offer.
type gateway struct {
	endpoint, accessKey, secretKey string
	client                         *s3.Client
}

func startGateway(t *testing.T) *gateway {
	t.Helper()
	g := &gateway{}
	g.endpoint, g.accessKey, g.secretKey = peers.Versitygw(t)
	g.client = s3.New(s3.Options{
		Region:       DefaultRegion,
		Credentials:  credentials.NewStaticCredentialsProvider(g.accessKey, g.secretKey, ""),
		BaseEndpoint: aws.String(g.endpoint),
		UsePathStyle: true,
	})
	return g
}

// createBucket creates a bucket, with Object Lock enabled when lock is true (which also enables
// versioning). An unlocked bucket gets versioning enabled explicitly, so objects still have version ids.
func (g *gateway) createBucket(t *testing.T, name string, lock bool) {
	t.Helper()
	ctx := context.Background()
	_, err := g.client.CreateBucket(ctx, &s3.CreateBucketInput{
		Bucket:                     aws.String(name),
		ObjectLockEnabledForBucket: aws.Bool(lock),
	})
	if err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
	if lock {
		return
	}
	_, err = g.client.PutBucketVersioning(ctx, &s3.PutBucketVersioningInput{
		Bucket:                  aws.String(name),
		VersioningConfiguration: &types.VersioningConfiguration{Status: types.BucketVersioningStatusEnabled},
	})
	if err != nil {
		t.Fatalf("enable versioning on %s: %v", name, err)
	}
}

func (g *gateway) config(bucket string, retention time.Duration) Config {
	return Config{
		Endpoint:  g.endpoint,
		Bucket:    bucket,
		AccessKey: g.accessKey,
		SecretKey: g.secretKey,
		Retention: retention,
		Prefix:    "auditarch/",
	}
}

func (g *gateway) open(t *testing.T, bucket string, retention time.Duration) *Store {
	t.Helper()
	s, err := Open(context.Background(), g.config(bucket, retention), testLogger(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// versions lists the object versions (not delete markers) of key.
func (g *gateway) versions(t *testing.T, bucket, key string) []types.ObjectVersion {
	t.Helper()
	out, err := g.client.ListObjectVersions(context.Background(), &s3.ListObjectVersionsInput{
		Bucket: aws.String(bucket),
		Prefix: aws.String(key),
	})
	if err != nil {
		t.Fatalf("list versions of %s: %v", key, err)
	}
	var vs []types.ObjectVersion
	for _, v := range out.Versions {
		if aws.ToString(v.Key) == key {
			vs = append(vs, v)
		}
	}
	return vs
}

func testLogger(t *testing.T) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel)
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "segment")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestS3 runs every case against one versitygw, each in its own bucket.
func TestS3(t *testing.T) {
	g := startGateway(t)
	ctx := context.Background()

	t.Run("PutLocksCompliance", func(t *testing.T) {
		g.createBucket(t, "put", true)
		const retention = time.Hour
		s := g.open(t, "put", retention)
		content := strings.Repeat("sealed segment\n", 1000)
		before := time.Now()
		if err := s.Put(ctx, "host1", "0001.seg", writeFile(t, content)); err != nil {
			t.Fatalf("Put: %v", err)
		}
		after := time.Now()

		mode, until, err := s.Retention(ctx, "host1", "0001.seg")
		if err != nil {
			t.Fatalf("Retention: %v", err)
		}
		if mode != "COMPLIANCE" {
			t.Errorf("mode = %q, want COMPLIANCE", mode)
		}
		if lo, hi := before.Add(retention).Truncate(time.Second), after.Add(retention+time.Second); until.Before(lo) || until.After(hi) {
			t.Errorf("retain until %s, want within [%s, %s]", until, lo, hi)
		}

		// HeadObject reports the same lock as GetObjectRetention.
		key := "auditarch/host1/0001.seg"
		head, err := g.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("put"), Key: aws.String(key)})
		if err != nil {
			t.Fatalf("HeadObject: %v", err)
		}
		if head.ObjectLockMode != types.ObjectLockModeCompliance || head.ObjectLockRetainUntilDate == nil ||
			!head.ObjectLockRetainUntilDate.Equal(until) {
			t.Errorf("HeadObject lock = %q until %v, want COMPLIANCE until %s", head.ObjectLockMode, head.ObjectLockRetainUntilDate, until)
		}

		obj, err := g.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("put"), Key: aws.String(key)})
		if err != nil {
			t.Fatalf("GetObject: %v", err)
		}
		got, err := io.ReadAll(obj.Body)
		obj.Body.Close()
		if err != nil || string(got) != content {
			t.Fatalf("GetObject: %d bytes, err %v; want the %d bytes put", len(got), err, len(content))
		}

		// The locked version can be neither deleted nor have its retention shortened.
		vs := g.versions(t, "put", key)
		if len(vs) != 1 {
			t.Fatalf("%d versions of %s, want 1", len(vs), key)
		}
		for _, bypass := range []bool{false, true} {
			_, err := g.client.DeleteObject(ctx, &s3.DeleteObjectInput{
				Bucket: aws.String("put"), Key: aws.String(key), VersionId: vs[0].VersionId,
				BypassGovernanceRetention: aws.Bool(bypass),
			})
			if !isAccessDenied(err) {
				t.Errorf("delete of locked version (bypass governance %v): err = %v, want access denied", bypass, err)
			}
		}
		shorter := time.Now().Add(time.Minute)
		_, err = g.client.PutObjectRetention(ctx, &s3.PutObjectRetentionInput{
			Bucket: aws.String("put"), Key: aws.String(key), VersionId: vs[0].VersionId,
			Retention:                 &types.ObjectLockRetention{Mode: types.ObjectLockRetentionModeCompliance, RetainUntilDate: &shorter},
			BypassGovernanceRetention: aws.Bool(true),
		})
		if err == nil {
			t.Errorf("shortening the retention succeeded")
		}
		if vs := g.versions(t, "put", key); len(vs) != 1 {
			t.Errorf("%d versions of %s after the refused changes, want 1", len(vs), key)
		}
	})

	t.Run("PutNeverOverwrites", func(t *testing.T) {
		g.createBucket(t, "conflict", true)
		s := g.open(t, "conflict", time.Hour)
		if err := s.Put(ctx, "h", "seg", writeFile(t, "first")); err != nil {
			t.Fatalf("Put: %v", err)
		}
		err := s.Put(ctx, "h", "seg", writeFile(t, "second"))
		if !errors.Is(err, ErrConflict) {
			t.Fatalf("Put of different content: err = %v, want ErrConflict", err)
		}
		t.Log(err)
		if err := s.Put(ctx, "h", "seg", writeFile(t, "first")); err != nil {
			t.Fatalf("Put of the same content again: %v", err)
		}
		if vs := g.versions(t, "conflict", "auditarch/h/seg"); len(vs) != 1 {
			t.Errorf("%d versions, want 1", len(vs))
		}
	})

	t.Run("PutSameContentExtendsRetention", func(t *testing.T) {
		g.createBucket(t, "extend", true)
		short := g.open(t, "extend", time.Minute)
		if err := short.Put(ctx, "h", "seg", writeFile(t, "data")); err != nil {
			t.Fatalf("Put: %v", err)
		}
		long := g.open(t, "extend", 2*time.Hour)
		before := time.Now()
		if err := long.Put(ctx, "h", "seg", writeFile(t, "data")); err != nil {
			t.Fatalf("Put again with a longer retention: %v", err)
		}
		mode, until, err := long.Retention(ctx, "h", "seg")
		if err != nil {
			t.Fatal(err)
		}
		if want := before.Add(2 * time.Hour).Truncate(time.Second); mode != "COMPLIANCE" || until.Before(want) {
			t.Errorf("retention %s until %s, want COMPLIANCE until at least %s", mode, until, want)
		}
		if vs := g.versions(t, "extend", "auditarch/h/seg"); len(vs) != 1 {
			t.Errorf("%d versions, want 1", len(vs))
		}
	})

	t.Run("GatewayAssumptions", func(t *testing.T) {
		// Put relies on these server behaviours: a conditional put (If-None-Match: *) onto an existing key is
		// refused with 412, which closes the race between two Puts of one key; a body that does not match
		// x-amz-checksum-sha256 is refused.
		g.createBucket(t, "assume", true)
		s := g.open(t, "assume", time.Hour)
		if err := s.Put(ctx, "h", "seg", writeFile(t, "data")); err != nil {
			t.Fatalf("Put: %v", err)
		}
		until := time.Now().Add(time.Hour)
		_, err := g.client.PutObject(ctx, &s3.PutObjectInput{
			Bucket: aws.String("assume"), Key: aws.String("auditarch/h/seg"), Body: strings.NewReader("other"),
			IfNoneMatch: aws.String("*"), ObjectLockMode: types.ObjectLockModeCompliance, ObjectLockRetainUntilDate: &until,
		})
		if !isPreconditionFailed(err) {
			t.Errorf("conditional put onto an existing key: err = %v, want 412 precondition failed", err)
		}
		wrong := "p5N7ZLjKpY8Dchu2us9ceMsjX+vg5wsbhM2ZVBRhoI4=" // SHA-256 of "first"
		_, err = g.client.PutObject(ctx, &s3.PutObjectInput{
			Bucket: aws.String("assume"), Key: aws.String("auditarch/h/other"), Body: strings.NewReader("second"),
			ChecksumSHA256: aws.String(wrong), ObjectLockMode: types.ObjectLockModeCompliance, ObjectLockRetainUntilDate: &until,
		})
		if err == nil {
			t.Errorf("put with a wrong SHA-256 checksum succeeded")
		} else {
			t.Log(err)
		}
	})

	t.Run("PutRefusesBadNames", func(t *testing.T) {
		g.createBucket(t, "names", true)
		s := g.open(t, "names", time.Hour)
		p := writeFile(t, "x")
		for _, hn := range [][2]string{{"", "a"}, {"a", ""}, {"a/b", "c"}, {"a", "b/c"}, {"..", "a"}, {"a", "."}} {
			if err := s.Put(ctx, hn[0], hn[1], p); err == nil {
				t.Errorf("Put(%q, %q) succeeded", hn[0], hn[1])
			}
		}
	})

	t.Run("CanaryLocked", func(t *testing.T) {
		g.createBucket(t, "canary", true)
		s := g.open(t, "canary", time.Hour)
		for i := 0; i < 2; i++ {
			if err := s.Canary(ctx); err != nil {
				t.Fatalf("Canary #%d: %v", i+1, err)
			}
		}
		// One canary object per Store, still there after both attempts.
		out, err := g.client.ListObjectVersions(ctx, &s3.ListObjectVersionsInput{
			Bucket: aws.String("canary"), Prefix: aws.String("auditarch/canary/"),
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Versions) != 1 || len(out.DeleteMarkers) != 0 {
			t.Errorf("canary versions %d, delete markers %d; want 1 and 0", len(out.Versions), len(out.DeleteMarkers))
		}
	})

	t.Run("CanaryDetectsBypassableLock", func(t *testing.T) {
		// A GOVERNANCE lock can be lifted by a principal allowed to bypass it (here the root user): the
		// bypass delete succeeds, which Canary must report.
		g.createBucket(t, "governance", true)
		s := g.open(t, "governance", time.Hour)
		s.canaryMode = types.ObjectLockModeGovernance
		err := s.Canary(ctx)
		if !errors.Is(err, ErrNotWriteOnce) {
			t.Fatalf("Canary: err = %v, want ErrNotWriteOnce", err)
		}
		t.Log(err)
	})

	t.Run("OpenRefusesUnlockedBucket", func(t *testing.T) {
		g.createBucket(t, "unlocked", false)
		_, err := Open(ctx, g.config("unlocked", time.Hour), testLogger(t))
		if !errors.Is(err, ErrNotWriteOnce) || !strings.Contains(err.Error(), "object lock") {
			t.Fatalf("Open: err = %v, want an object lock error wrapping ErrNotWriteOnce", err)
		}
		t.Log(err)

		// Canary, reached past Open, says the same.
		s, err := newStore(g.config("unlocked", time.Hour), testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		err = s.Canary(ctx)
		if !errors.Is(err, ErrNotWriteOnce) {
			t.Fatalf("Canary: err = %v, want ErrNotWriteOnce", err)
		}
		t.Log(err)
	})

	t.Run("OpenMissingBucket", func(t *testing.T) {
		_, err := Open(ctx, g.config("nosuchbucket", time.Hour), testLogger(t))
		if err == nil || errors.Is(err, ErrNotWriteOnce) {
			t.Fatalf("Open: err = %v, want a plain error", err)
		}
		t.Log(err)
	})
}

func TestS3ConfigValidation(t *testing.T) {
	ok := Config{Bucket: "b", AccessKey: "a", SecretKey: "s", Retention: time.Hour}
	for name, mutate := range map[string]func(*Config){
		"no bucket":     func(c *Config) { c.Bucket = "" },
		"no access key": func(c *Config) { c.AccessKey = "" },
		"no retention":  func(c *Config) { c.Retention = 0 },
	} {
		cfg := ok
		mutate(&cfg)
		if _, err := newStore(cfg, zerolog.Nop()); err == nil {
			t.Errorf("%s: newStore succeeded", name)
		}
	}
	if _, err := newStore(ok, zerolog.Nop()); err != nil {
		t.Errorf("valid config: %v", err)
	}
}

func TestS3CeilSecond(t *testing.T) {
	base := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	for in, want := range map[time.Time]time.Time{
		base:                             base,
		base.Add(time.Nanosecond):        base.Add(time.Second),
		base.Add(999 * time.Millisecond): base.Add(time.Second),
	} {
		if got := ceilSecond(in); !got.Equal(want) {
			t.Errorf("ceilSecond(%s) = %s, want %s", in, got, want)
		}
	}
}
