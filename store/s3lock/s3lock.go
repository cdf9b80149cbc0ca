// Package s3lock stores sealed segment files in an S3 bucket with Object Lock, as write-once evidence.
//
// Invariant: when Put returns nil, the object Prefix+host+"/"+name holds exactly the bytes of the sealed
// file (checked by the server against a SHA-256 checksum) and the server has reported, when read back,
// COMPLIANCE retention until at least the Put time plus Config.Retention. Until that date nobody, the
// bucket's owner included, can delete or shorten the retention of that object version. Put never
// replaces an existing object: the same content is accepted (a retry after a crash), different content
// is ErrConflict.
//
// Open refuses a bucket without Object Lock; Canary checks at run time that a locked version really
// cannot be deleted. The design follows the S3 Object Lock model
// (https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-lock.html); it is tested against
// versitygw.
package s3lock

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/rs/zerolog"
)

var (
	// ErrConflict means the key already holds an object with different content. Put never overwrites it.
	ErrConflict = errors.New("object exists with different content")
	// ErrNotWriteOnce means the bucket does not keep objects write-once: it has no Object Lock, or a
	// locked object version could be deleted.
	ErrNotWriteOnce = errors.New("bucket is not write-once")
)

// DefaultRegion is used when Config.Region is empty.
const DefaultRegion = "us-east-1"

const (
	// canaryDir is the key directory (under Config.Prefix) of Canary's objects.
	canaryDir = "canary/"
	// canaryMaxRetention caps the retention of a canary object, so canaries do not pile up for the full
	// segment retention. A canary is rewritten once less than half of its retention is left.
	canaryMaxRetention = 24 * time.Hour
	canaryBody         = "auditarch write-once canary\n"
)

// Config says where and how long segments are kept.
type Config struct {
	Endpoint  string // S3 endpoint URL, e.g. http://127.0.0.1:7070; empty for AWS
	Region    string // default DefaultRegion
	Bucket    string // must exist with Object Lock enabled
	AccessKey string // static credentials: AccessKey and SecretKey are both required
	SecretKey string
	Retention time.Duration // COMPLIANCE retention of every object, > 0
	Prefix    string        // key prefix, e.g. "auditarch/"
}

// Store uploads sealed segments to one bucket. It is safe for concurrent use.
type Store struct {
	client *s3.Client
	cfg    Config
	log    zerolog.Logger

	// canaryMode is the lock mode of canary objects: COMPLIANCE, like segments. Tests use GOVERNANCE to
	// check that Canary detects a lock that the delete can bypass.
	canaryMode types.ObjectLockMode

	mu     sync.Mutex
	canary *canaryObject // the current canary, nil before the first Canary or after it was deleted
}

type canaryObject struct {
	key, versionID string
	until          time.Time
}

// Open connects to the bucket and checks that it exists with Object Lock enabled. A bucket without
// Object Lock is an error wrapping ErrNotWriteOnce.
func Open(ctx context.Context, cfg Config, log zerolog.Logger) (*Store, error) {
	s, err := newStore(cfg, log)
	if err != nil {
		return nil, err
	}
	if err := s.checkBucketLock(ctx); err != nil {
		return nil, err
	}
	s.log.Debug().Str("bucket", cfg.Bucket).Str("endpoint", cfg.Endpoint).Msg("s3 bucket has object lock enabled")
	return s, nil
}

// checkBucketLock returns nil when the bucket has Object Lock enabled, an error wrapping ErrNotWriteOnce
// when it does not, and another error when it cannot tell.
func (s *Store) checkBucketLock(ctx context.Context) error {
	out, err := s.client.GetObjectLockConfiguration(ctx, &s3.GetObjectLockConfigurationInput{Bucket: &s.cfg.Bucket})
	switch {
	case apiCode(err) == "ObjectLockConfigurationNotFoundError":
		return fmt.Errorf("s3 bucket %q has no object lock configuration (create the bucket with object lock enabled): %w",
			s.cfg.Bucket, ErrNotWriteOnce)
	case apiCode(err) == "NoSuchBucket":
		return fmt.Errorf("s3 bucket %q does not exist: %w", s.cfg.Bucket, err)
	case err != nil:
		return fmt.Errorf("s3 bucket %q: get object lock configuration: %w", s.cfg.Bucket, err)
	case out.ObjectLockConfiguration == nil || out.ObjectLockConfiguration.ObjectLockEnabled != types.ObjectLockEnabledEnabled:
		return fmt.Errorf("s3 bucket %q does not have object lock enabled: %w", s.cfg.Bucket, ErrNotWriteOnce)
	}
	return nil
}

// newStore validates cfg and builds the client, without checking the bucket.
func newStore(cfg Config, log zerolog.Logger) (*Store, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3 config: bucket is required")
	}
	if cfg.AccessKey == "" || cfg.SecretKey == "" {
		return nil, errors.New("s3 config: access key and secret key are required")
	}
	if cfg.Retention <= 0 {
		return nil, fmt.Errorf("s3 config: retention must be positive, got %v", cfg.Retention)
	}
	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	}
	opts := s3.Options{
		Region:       cfg.Region,
		Credentials:  credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, ""),
		UsePathStyle: cfg.Endpoint != "",
	}
	if cfg.Endpoint != "" {
		opts.BaseEndpoint = aws.String(cfg.Endpoint)
	}
	return &Store{
		client:     s3.New(opts),
		cfg:        cfg,
		log:        log,
		canaryMode: types.ObjectLockModeCompliance,
	}, nil
}

// key returns the object key of a segment.
func (s *Store) key(host, name string) string { return s.cfg.Prefix + host + "/" + name }

// Put uploads the sealed segment file at path as Prefix+host+"/"+name, locked in COMPLIANCE mode until now plus
// Config.Retention, and reads the retention back. It returns nil only once the server reports that lock.
// If the key already holds the same content (by SHA-256), Put only makes sure of its lock (extending the
// retention if needed); other content is an error wrapping ErrConflict.
func (s *Store) Put(ctx context.Context, host, name, path string) error {
	if err := checkPathElem("host", host); err != nil {
		return err
	}
	if err := checkPathElem("segment name", name); err != nil {
		return err
	}
	key := s.key(host, name)
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	defer f.Close()
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("put %s: hash %s: %w", key, path, err)
	}
	sum := base64.StdEncoding.EncodeToString(h.Sum(nil))
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	until := ceilSecond(time.Now().Add(s.cfg.Retention))

	// Look first, so a server that ignores If-None-Match still cannot make Put replace an object; the
	// conditional put below closes the race with a concurrent writer.
	exists, err := s.existing(ctx, key, sum, until)
	if err != nil || exists {
		return err
	}
	out, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:                    &s.cfg.Bucket,
		Key:                       &key,
		Body:                      f,
		ContentLength:             aws.Int64(size),
		ContentType:               aws.String("application/octet-stream"),
		ChecksumSHA256:            &sum,
		IfNoneMatch:               aws.String("*"),
		ObjectLockMode:            types.ObjectLockModeCompliance,
		ObjectLockRetainUntilDate: &until,
	})
	if isPreconditionFailed(err) {
		exists, err = s.existing(ctx, key, sum, until)
		if err == nil && !exists {
			err = fmt.Errorf("put %s: conditional put failed but no object is there", key)
		}
		return err
	}
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	version := aws.ToString(out.VersionId)
	if err := s.checkRetention(ctx, key, version, until); err != nil {
		return err
	}
	s.log.Info().Str("key", key).Str("version", version).Int64("bytes", size).Time("retain_until", until).
		Msg("segment stored write-once")
	return nil
}

// existing reports whether key already holds an object. If it holds the content with SHA-256 sum, existing
// makes sure it is locked until at least until and returns true; other content is ErrConflict.
func (s *Store) existing(ctx context.Context, key, sum string, until time.Time) (bool, error) {
	head, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{
		Bucket:       &s.cfg.Bucket,
		Key:          &key,
		ChecksumMode: types.ChecksumModeEnabled,
	})
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("put %s: head existing object: %w", key, err)
	}
	stored := aws.ToString(head.ChecksumSHA256)
	if stored != sum {
		if stored == "" {
			stored = "none"
		}
		return true, fmt.Errorf("put %s: %w (sha256 %s, stored sha256 %s)", key, ErrConflict, sum, stored)
	}
	version := aws.ToString(head.VersionId)
	mode, got, err := s.retention(ctx, key, version)
	if err != nil {
		return true, fmt.Errorf("put %s: %w", key, err)
	}
	if mode == types.ObjectLockRetentionModeCompliance && !got.Before(until) {
		s.log.Info().Str("key", key).Str("version", version).Time("retain_until", got).
			Msg("segment already stored write-once")
		return true, nil
	}
	// Same content, but not (yet) locked as long as asked: a previous Put may have stopped half-way, or
	// the retention was configured shorter. Extending a COMPLIANCE retention is always allowed.
	s.log.Info().Str("key", key).Str("version", version).Str("mode", string(mode)).Time("retain_until", got).
		Time("extend_to", until).Msg("segment already stored; extending its retention")
	_, err = s.client.PutObjectRetention(ctx, &s3.PutObjectRetentionInput{
		Bucket:    &s.cfg.Bucket,
		Key:       &key,
		VersionId: head.VersionId,
		Retention: &types.ObjectLockRetention{Mode: types.ObjectLockRetentionModeCompliance, RetainUntilDate: &until},
	})
	if err != nil {
		return true, fmt.Errorf("put %s: extend retention of existing object: %w", key, err)
	}
	return true, s.checkRetention(ctx, key, version, until)
}

// checkRetention reads back the retention of a version of key and checks it is COMPLIANCE until at least
// until.
func (s *Store) checkRetention(ctx context.Context, key, version string, until time.Time) error {
	mode, got, err := s.retention(ctx, key, version)
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if mode != types.ObjectLockRetentionModeCompliance {
		return fmt.Errorf("put %s: stored with retention mode %q, not COMPLIANCE: %w", key, mode, ErrNotWriteOnce)
	}
	if got.Before(until) {
		return fmt.Errorf("put %s: retained until %s, earlier than the requested %s: %w",
			key, got.Format(time.RFC3339), until.Format(time.RFC3339), ErrNotWriteOnce)
	}
	return nil
}

// Retention returns the retention mode ("COMPLIANCE", "GOVERNANCE", or "" when the object has none) and
// retain-until date of the current version of a segment.
func (s *Store) Retention(ctx context.Context, host, name string) (mode string, until time.Time, err error) {
	key := s.key(host, name)
	m, until, err := s.retention(ctx, key, "")
	if err != nil {
		return "", time.Time{}, fmt.Errorf("retention of %s: %w", key, err)
	}
	return string(m), until, nil
}

// retention reads the retention of a version of key (the current version when version is "").
func (s *Store) retention(ctx context.Context, key, version string) (types.ObjectLockRetentionMode, time.Time, error) {
	in := &s3.GetObjectRetentionInput{Bucket: &s.cfg.Bucket, Key: &key}
	if version != "" {
		in.VersionId = &version
	}
	out, err := s.client.GetObjectRetention(ctx, in)
	if apiCode(err) == "NoSuchObjectLockConfiguration" {
		return "", time.Time{}, nil // the object has no retention
	}
	if err != nil {
		return "", time.Time{}, fmt.Errorf("get object retention: %w", err)
	}
	if out.Retention == nil || out.Retention.RetainUntilDate == nil {
		return "", time.Time{}, nil
	}
	return out.Retention.Mode, *out.Retention.RetainUntilDate, nil
}

// Canary checks that the bucket really keeps objects write-once. The first call writes a small locked
// object Prefix+"canary/<unix time>" (retention min(Config.Retention, 24h); it is rewritten when less
// than half of that is left), and every call tries to delete that object version, once plainly and once
// with BypassGovernanceRetention. Canary returns nil when both deletes are refused with access denied, and
// an error wrapping ErrNotWriteOnce when a delete succeeded or the bucket cannot lock the object. Any
// other failure is a plain error: it proves nothing either way.
//
// A refusal proves the version cannot be deleted with the Store's credentials; the retention read back
// at write time shows it is the lock that refuses.
func (s *Store) Canary(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	retention := min(s.cfg.Retention, canaryMaxRetention)
	if c := s.canary; c == nil || time.Until(c.until) < retention/2 {
		c, err := s.putCanary(ctx, retention)
		if err != nil {
			return err
		}
		s.canary = c
	}
	c := s.canary
	for _, bypass := range []bool{false, true} {
		_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{
			Bucket:                    &s.cfg.Bucket,
			Key:                       &c.key,
			VersionId:                 &c.versionID,
			BypassGovernanceRetention: aws.Bool(bypass),
		})
		if err == nil {
			s.canary = nil
			s.log.Error().Str("key", c.key).Str("version", c.versionID).Bool("bypass_governance", bypass).
				Msg("deleting a locked object version succeeded: the bucket is not write-once")
			return fmt.Errorf("canary: delete of locked version %s of %s (bypass governance %v) succeeded: %w",
				c.versionID, c.key, bypass, ErrNotWriteOnce)
		}
		if !isAccessDenied(err) {
			return fmt.Errorf("canary: delete of locked version %s of %s: %w", c.versionID, c.key, err)
		}
	}
	// A server that answers "denied" must still hold the version.
	_, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.cfg.Bucket, Key: &c.key, VersionId: &c.versionID})
	if isNotFound(err) {
		s.canary = nil
		return fmt.Errorf("canary: delete of %s was refused but version %s is gone: %w", c.key, c.versionID, ErrNotWriteOnce)
	}
	if err != nil {
		return fmt.Errorf("canary: head %s version %s: %w", c.key, c.versionID, err)
	}
	s.log.Debug().Str("key", c.key).Str("version", c.versionID).Msg("canary: deleting a locked version was refused")
	return nil
}

// putCanary writes a new canary object locked for retention and checks its lock.
func (s *Store) putCanary(ctx context.Context, retention time.Duration) (*canaryObject, error) {
	now := time.Now()
	key := s.cfg.Prefix + canaryDir + strconv.FormatInt(now.Unix(), 10)
	until := ceilSecond(now.Add(retention))
	sum := sha256.Sum256([]byte(canaryBody))
	out, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:                    &s.cfg.Bucket,
		Key:                       &key,
		Body:                      strings.NewReader(canaryBody),
		ContentLength:             aws.Int64(int64(len(canaryBody))),
		ChecksumSHA256:            aws.String(base64.StdEncoding.EncodeToString(sum[:])),
		ObjectLockMode:            s.canaryMode,
		ObjectLockRetainUntilDate: &until,
	})
	if err != nil {
		// A bucket without Object Lock refuses lock headers (InvalidRequest): say so plainly.
		if lerr := s.checkBucketLock(ctx); errors.Is(lerr, ErrNotWriteOnce) {
			return nil, fmt.Errorf("canary: put %s: %w", key, lerr)
		}
		return nil, fmt.Errorf("canary: put %s: %w", key, err)
	}
	if out.VersionId == nil || *out.VersionId == "" || *out.VersionId == "null" {
		return nil, fmt.Errorf("canary: put %s returned no version id (versioning off): %w", key, ErrNotWriteOnce)
	}
	mode, got, err := s.retention(ctx, key, *out.VersionId)
	if err != nil {
		return nil, fmt.Errorf("canary: %s: %w", key, err)
	}
	if mode != types.ObjectLockRetentionMode(s.canaryMode) || got.Before(until) {
		return nil, fmt.Errorf("canary: %s stored with retention %q until %s, asked %s until %s: %w",
			key, mode, got.Format(time.RFC3339), s.canaryMode, until.Format(time.RFC3339), ErrNotWriteOnce)
	}
	s.log.Debug().Str("key", key).Str("version", *out.VersionId).Time("retain_until", until).Msg("canary written")
	return &canaryObject{key: key, versionID: *out.VersionId, until: until}, nil
}

// checkPathElem refuses key parts that would make keys ambiguous or escape the prefix.
func checkPathElem(what, v string) error {
	if v == "" || v == "." || v == ".." || strings.Contains(v, "/") {
		return fmt.Errorf("invalid %s %q: must be non-empty, not . or .., without /", what, v)
	}
	return nil
}

// ceilSecond rounds t up to a whole second: S3 keeps retain-until dates to the second, so a date read back
// is then never earlier than the one asked for.
func ceilSecond(t time.Time) time.Time {
	if r := t.Truncate(time.Second); !r.Equal(t) {
		return r.Add(time.Second)
	}
	return t
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

func isNotFound(err error) bool {
	if err == nil {
		return false
	}
	switch apiCode(err) {
	case "NotFound", "NoSuchKey", "NoSuchVersion":
		return true
	}
	return httpStatus(err) == http.StatusNotFound
}

func isPreconditionFailed(err error) bool {
	return err != nil && (apiCode(err) == "PreconditionFailed" || httpStatus(err) == http.StatusPreconditionFailed)
}

func isAccessDenied(err error) bool {
	return err != nil && (apiCode(err) == "AccessDenied" || httpStatus(err) == http.StatusForbidden)
}
