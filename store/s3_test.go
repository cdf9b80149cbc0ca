package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/rs/zerolog"

	"github.com/auditarch/auditarch/archive/verify"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/internal/archivetest"
	"github.com/auditarch/auditarch/internal/peers"
	"github.com/auditarch/auditarch/internal/shiptest"
	"github.com/auditarch/auditarch/store"
	"github.com/auditarch/auditarch/store/s3lock"
)

// TestSealedSegmentsToObjectLock: a store with an S3 backend (versitygw, Object Lock) uploads every sealed
// segment a host ships, each under COMPLIANCE retention, and the bucket refuses the canary's deletion.
func TestSealedSegmentsToObjectLock(t *testing.T) {
	g := peers.S3Gateway(t)
	endpoint, ak, sk, cl := g.Endpoint, g.AccessKey, g.SecretKey, g.Client
	ctx := context.Background()
	g.LockedBucket(t, "evidence")
	const retention = 2 * time.Hour
	locked, err := s3lock.Open(ctx, s3lock.Config{Endpoint: endpoint, Bucket: "evidence", AccessKey: ak, SecretKey: sk,
		Retention: retention, Prefix: "auditarch/"}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := locked.Canary(ctx); err != nil {
		t.Fatalf("canary: %v", err)
	}
	id, pub := archivetest.Identity(t, "host-s3.example")
	st := shiptest.StartStore(t, "", store.Config{Upload: locked}, pub)
	shiptest.ShipArchive(t, st, writer.Options{Identity: id, SegmentDuration: 500 * time.Millisecond, FlushInterval: 10 * time.Millisecond}, 300, 5*time.Millisecond)
	r, err := verify.Dir(st.HostDir("host-s3.example"), verify.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var sealed []string
	for _, s := range r.Segments {
		if s.Sealed {
			sealed = append(sealed, s.File)
		}
	}
	if len(sealed) < 2 {
		t.Fatalf("only %d sealed segments", len(sealed))
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, name := range sealed {
		for {
			mode, until, err := locked.Retention(ctx, "host-s3.example", name)
			if err == nil {
				if mode != "COMPLIANCE" || until.Before(time.Now().Add(retention-time.Minute)) {
					t.Fatalf("%s: retention %s until %s", name, mode, until)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not uploaded: %v", name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// A locked version cannot be deleted, even by the bucket's root user.
		head, err := cl.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("evidence"), Key: aws.String("auditarch/host-s3.example/" + name)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cl.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("evidence"), Key: aws.String("auditarch/host-s3.example/" + name),
			VersionId: head.VersionId, BypassGovernanceRetention: aws.Bool(true)}); err == nil {
			t.Fatalf("%s: deleting the locked version succeeded", name)
		}
	}
	t.Logf("%d sealed segments uploaded under COMPLIANCE retention", len(sealed))
}
