package peers

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// S3 is a private versitygw gateway with a raw client, for tests that check what a bucket holds.
type S3 struct {
	Endpoint, AccessKey, SecretKey string
	Client                         *s3.Client
}

// S3Gateway starts versitygw (see Versitygw) and returns it with a client for its root account.
func S3Gateway(tb testing.TB) *S3 {
	tb.Helper()
	g := &S3{}
	g.Endpoint, g.AccessKey, g.SecretKey = Versitygw(tb)
	g.Client = s3.New(s3.Options{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider(g.AccessKey, g.SecretKey, ""),
		BaseEndpoint: aws.String(g.Endpoint), UsePathStyle: true})
	return g
}

// LockedBucket creates a bucket with Object Lock enabled (which enables versioning).
func (g *S3) LockedBucket(tb testing.TB, name string) {
	tb.Helper()
	if _, err := g.Client.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(name), ObjectLockEnabledForBucket: aws.Bool(true)}); err != nil {
		tb.Fatalf("create bucket %s: %v", name, err)
	}
}
